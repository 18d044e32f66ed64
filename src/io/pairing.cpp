#include "io/pairing.h"

#include <fmt/format.h>

#include <algorithm>

namespace deltaedit::io {

const char* to_string(PairStatus s) {
  switch (s) {
    case PairStatus::Editable: return "editable";
    case PairStatus::OnlyPost: return "only_post";
    case PairStatus::OnlyBase: return "only_base";
    case PairStatus::ShapeMismatch: return "shape_mismatch";
    case PairStatus::Resized: return "resized";
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

bool rows_added(const std::vector<int64_t>& b, const std::vector<int64_t>& p) {
  return !b.empty() && b.size() == p.size() && p[0] > b[0] && std::equal(b.begin() + 1, b.end(), p.begin() + 1);
}

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
      if (rows_added(bi.shape, pi.shape) && is_compute_dtype(bi.dtype) && is_compute_dtype(pi.dtype)) {
        p.status = PairStatus::Resized;
        p.shared_rows = bi.shape[0];
        p.post_rows = pi.shape[0];
        p.note = fmt::format("resized: base {} vs post {} ({} rows added); copied from post unchanged",
                             shape_str(bi.shape), shape_str(pi.shape), pi.shape[0] - bi.shape[0]);
      } else if (bi.shape != pi.shape) {
        p.status = PairStatus::ShapeMismatch;
        p.note = fmt::format("base {} vs post {}; copied from post unchanged", shape_str(bi.shape), shape_str(pi.shape));
      } else if (!is_compute_dtype(bi.dtype) || !is_compute_dtype(pi.dtype)) {
        p.status = PairStatus::NotNumeric;
        p.note = fmt::format("dtype {} / {} is not computed on; copied from post unchanged",
                             dtype_name(bi.dtype), dtype_name(pi.dtype));
      }
    }
    out.push_back(std::move(p));
  }
  for (const auto& name : base.names())
    if (!post.contains(name)) out.push_back({name, PairStatus::OnlyBase, "only in base; not in the output"});
  return out;
}

}  // namespace deltaedit::io
