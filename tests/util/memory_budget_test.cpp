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

TEST(MemoryBudget, AdmitsInArrivalOrder) {
  MemoryBudget b(100);
  std::optional<MemoryBudget::Hold> first;
  first.emplace(b, 60);
  std::atomic<bool> large_in{false}, later_in{false};
  std::thread large([&] {
    MemoryBudget::Hold h(b, 80);  // does not fit beside the first hold
    large_in = true;
    std::this_thread::sleep_for(20ms);
    EXPECT_FALSE(later_in.load());  // 80 + 30 > 100: the later request waits for this one
  });
  std::this_thread::sleep_for(20ms);
  std::thread later([&] {
    MemoryBudget::Hold h(b, 30);  // would fit beside the first, but arrived after the large one
    later_in = true;
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(large_in.load());
  EXPECT_FALSE(later_in.load());
  first.reset();
  large.join();
  later.join();
  EXPECT_TRUE(later_in.load());
}

}  // namespace
}  // namespace deltaedit::util
