// MemoryBudget: concurrent holds never exceed the limit, an oversized request runs alone, and
// requests are admitted in arrival order.
#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "util/memory_budget.h"

namespace deltaedit::util {
namespace {

using namespace std::chrono_literals;

TEST(MemoryBudget, ConcurrentHoldsStayWithinTheLimit) {
  MemoryBudget b(100);
  std::atomic<int64_t> held{0}, worst{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t) {
    pool.emplace_back([&, t] {
      for (int k = 0; k < 50; ++k) {
        const uint64_t bytes = 30 + uint64_t((t * 7 + k * 13) % 40);  // 30..69: two fit, never three
        MemoryBudget::Hold h(b, bytes);
        const int64_t now = held += int64_t(bytes);
        int64_t w = worst.load();
        while (now > w && !worst.compare_exchange_weak(w, now)) {
        }
        std::this_thread::sleep_for(50us);
        held -= int64_t(bytes);
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_LE(worst.load(), 100);
  EXPECT_LE(b.peak(), 100u);
  EXPECT_GE(b.peak(), 60u);  // two holds did run together
}

TEST(MemoryBudget, OversizedRequestRunsAlone) {
  MemoryBudget b(100);
  std::atomic<bool> big_in{false};
  std::optional<MemoryBudget::Hold> small;
  small.emplace(b, 10);
  std::thread big([&] {
    MemoryBudget::Hold h(b, 500);  // larger than the limit: waits until nothing else is held
    big_in = true;
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(big_in.load());
  small.reset();
  big.join();
  EXPECT_TRUE(big_in.load());
  EXPECT_EQ(b.peak(), 500u);
}

// No sleeps: the test waits on the budget's own count of waiting requests, so each step is
// reached by construction. A small request that would fit beside the current hold must not
// overtake a larger one that arrived first.
TEST(MemoryBudget, AdmitsInArrivalOrder) {
  MemoryBudget b(100);
  std::optional<MemoryBudget::Hold> first;
  first.emplace(b, 60);
  std::atomic<int> admitted{0}, large_rank{0}, later_rank{0};
  std::atomic<bool> release_large{false};
  std::thread large([&] {
    MemoryBudget::Hold h(b, 80);  // does not fit beside the first hold
    large_rank = ++admitted;
    while (!release_large.load()) std::this_thread::yield();
  });
  while (b.waiting() < 1) std::this_thread::yield();
  std::thread later([&] {
    MemoryBudget::Hold h(b, 30);  // would fit beside the first, but arrived after the large one
    later_rank = ++admitted;
  });
  while (b.waiting() < 2 && later_rank.load() == 0) std::this_thread::yield();
  EXPECT_EQ(later_rank.load(), 0) << "the later, smaller request overtook the waiting large one";
  EXPECT_EQ(b.waiting(), 2u);
  EXPECT_EQ(b.held(), 60u);
  first.reset();
  while (large_rank.load() == 0) std::this_thread::yield();
  // 80 + 30 > 100: the later request still waits, now for the large hold.
  EXPECT_EQ(b.held(), 80u);
  EXPECT_EQ(b.waiting(), 1u);
  EXPECT_EQ(later_rank.load(), 0);
  release_large = true;
  large.join();
  later.join();
  EXPECT_EQ(large_rank.load(), 1);
  EXPECT_EQ(later_rank.load(), 2);
  EXPECT_EQ(b.held(), 0u);
  EXPECT_EQ(b.peak(), 80u);
}

}  // namespace
}  // namespace deltaedit::util
