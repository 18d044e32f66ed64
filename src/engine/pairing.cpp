#include "engine/pairing.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include <fmt/format.h>

namespace deltaedit::engine {

const char* to_string(PairStatus s) {
  switch (s) {
    case PairStatus::Editable: return "editable";
    case PairStatus::OnlyPost: return "only_post";
    case PairStatus::OnlyBase: return "only_base";
    case PairStatus::ShapeMismatch: return "shape_mismatch";
    case PairStatus::NotNumeric: return "not_numeric";
  }
  return "?";
}

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "," : "") + std::to_string(s[i]);
  return r + "]";
}
}  // namespace

std::vector<TensorPair> pair_tensors(const io::TensorSource& base, const io::TensorSource& post) {
  std::vector<TensorPair> out;
  for (const auto& name : post.names()) {
    TensorPair p{name, PairStatus::Editable, {}};
    const auto& pi = post.info(name);
    if (!base.contains(name)) {
      p.status = PairStatus::OnlyPost;
      p.note = "not in base; copied from post unchanged";
    } else {
      const auto& bi = base.info(name);
      if (bi.shape != pi.shape) {
        p.status = PairStatus::ShapeMismatch;
        p.note = fmt::format("base {} vs post {}; copied from post unchanged", shape_str(bi.shape), shape_str(pi.shape));
      } else if (!io::is_compute_dtype(bi.dtype) || !io::is_compute_dtype(pi.dtype)) {
        p.status = PairStatus::NotNumeric;
        p.note = fmt::format("dtype {} / {} is not computed on; copied from post unchanged",
                             io::dtype_name(bi.dtype), io::dtype_name(pi.dtype));
      }
    }
    out.push_back(std::move(p));
  }
  for (const auto& name : base.names())
    if (!post.contains(name)) out.push_back({name, PairStatus::OnlyBase, "only in base; not in the output"});
  return out;
}

void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)>& fn) {
  if (threads <= 1 || n <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr err;
  std::mutex mu;
  auto worker = [&] {
    for (;;) {
      if (failed.load()) return;
      size_t i = next.fetch_add(1);
      if (i >= n) return;
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> g(mu);
        if (!err) err = std::current_exception();
        failed.store(true);
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  if (err) std::rethrow_exception(err);
}

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

uint64_t MemoryBudget::peak() const {
  std::lock_guard<std::mutex> g(mu_);
  return peak_;
}

}  // namespace deltaedit::engine
