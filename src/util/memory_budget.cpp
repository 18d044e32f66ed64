#include "util/memory_budget.h"

#include <algorithm>

namespace deltaedit::util {

MemoryBudget::Hold::Hold(MemoryBudget& b, uint64_t bytes) : b_(b), bytes_(bytes) {
  {
    std::unique_lock<std::mutex> g(b_.mu_);
    const uint64_t ticket = b_.next_ticket_++;
    b_.cv_.wait(g, [&] { return b_.serving_ == ticket && (b_.used_ == 0 || b_.used_ + bytes_ <= b_.limit_); });
    ++b_.serving_;
    b_.used_ += bytes_;
    b_.peak_ = std::max(b_.peak_, b_.used_);
  }
  b_.cv_.notify_all();  // the next ticket may fit too
}

MemoryBudget::Hold::~Hold() {
  {
    std::lock_guard<std::mutex> g(b_.mu_);
    b_.used_ -= bytes_;
  }
  b_.cv_.notify_all();
}

uint64_t MemoryBudget::held() const {
  std::lock_guard<std::mutex> g(mu_);
  return used_;
}

uint64_t MemoryBudget::waiting() const {
  std::lock_guard<std::mutex> g(mu_);
  return next_ticket_ - serving_;
}

uint64_t MemoryBudget::peak() const {
  std::lock_guard<std::mutex> g(mu_);
  return peak_;
}

}  // namespace deltaedit::util
