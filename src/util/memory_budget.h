// A byte budget shared by concurrent workers.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace deltaedit::util {

// Admits work against a byte budget so that concurrent workers never hold more than `limit`
// bytes of tensor buffers together (e.g. the embedding and lm_head of a large vocabulary do not
// run at the same time). A request larger than the limit is admitted when nothing else is held,
// so every request is eventually served and peak use is max(limit, largest request). Requests are
// admitted in arrival order (a waiting large request is not overtaken by later small ones).
class MemoryBudget {
 public:
  explicit MemoryBudget(uint64_t limit) : limit_(limit) {}
  class Hold {
   public:
    Hold(MemoryBudget& b, uint64_t bytes);
    ~Hold();
    Hold(const Hold&) = delete;
    Hold& operator=(const Hold&) = delete;

   private:
    MemoryBudget& b_;
    uint64_t bytes_;
  };
  uint64_t limit() const { return limit_; }
  uint64_t peak() const;  // most bytes held at once so far
  uint64_t held() const;  // bytes held now
  uint64_t waiting() const;  // requests that arrived and are not admitted yet

 private:
  uint64_t limit_;
  uint64_t used_ = 0, peak_ = 0;
  uint64_t next_ticket_ = 0, serving_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace deltaedit::util
