// Matching the tensors of a base and a post checkpoint (SPEC §2 "Scope").
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/tensor_source.h"

namespace deltaedit::engine {

enum class PairStatus {
  Editable,       // in both, same shape, both compute dtypes (F16/BF16/F32/F64)
  OnlyPost,       // passed through from post
  OnlyBase,       // reported; not in the output
  ShapeMismatch,  // e.g. resized vocabulary: passed through from post
  NotNumeric,     // same shape but a dtype deltaedit does not compute on (or class differs)
};
const char* to_string(PairStatus s);

struct TensorPair {
  std::string name;
  PairStatus status = PairStatus::Editable;
  std::string note;  // why, for reports
};

// Every tensor of either side, in post's order followed by base-only tensors.
std::vector<TensorPair> pair_tensors(const io::TensorSource& base, const io::TensorSource& post);

// Simple work splitting: run fn(i) for i in [0, n) on `threads` workers (results must be stored by
// index by the caller, so the outcome does not depend on scheduling). Exceptions are rethrown.
void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)>& fn);

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

 private:
  uint64_t limit_;
  uint64_t used_ = 0, peak_ = 0;
  uint64_t next_ticket_ = 0, serving_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace deltaedit::engine
