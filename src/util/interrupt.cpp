#include "util/interrupt.h"

#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "util/error.h"

namespace deltaedit::util {

std::atomic<int> g_interrupt_signal{0};

void check_interrupted() {
  if (int s = g_interrupt_signal.load())
    throw Error(ErrorKind::Interrupted, s == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
}

void run_interruptible(std::function<void()> job) {
  check_interrupted();
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::exception_ptr error;
  };
  auto st = std::make_shared<State>();
  std::thread([st, job = std::move(job)] {
    std::exception_ptr err;
    try {
      job();
    } catch (...) {
      err = std::current_exception();
    }
    std::lock_guard<std::mutex> g(st->mu);
    st->error = err;
    st->done = true;
    st->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lk(st->mu);
  while (!st->cv.wait_for(lk, std::chrono::milliseconds(20), [&] { return st->done; }))
    check_interrupted();
  if (st->error) std::rethrow_exception(st->error);
}

}  // namespace deltaedit::util
