// Matching the tensors of a base and a post checkpoint (SPEC §2 "Scope").
#pragma once
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/tensor_source.h"

namespace deltaedit::io {

enum class PairStatus {
  Editable,       // in both, same shape, both compute dtypes (F16/BF16/F32/F64)
  OnlyPost,       // passed through from post
  OnlyBase,       // reported; not in the output
  ShapeMismatch,  // shapes differ otherwise: passed through from post
  Resized,        // post has more rows, the rest of the shape equal (a vocabulary with added
                  // tokens: embed/lm_head [V+n, d] against [V, d]); the V rows are shared
  NotNumeric,     // same shape but a dtype deltaedit does not compute on (or class differs)
};
const char* to_string(PairStatus s);

struct TensorPair {
  std::string name;
  PairStatus status = PairStatus::Editable;
  std::string note;  // why, for reports
  int64_t shared_rows = 0, post_rows = 0;  // Resized: base's rows V and post's V + n
};

// Whether post's shape is base's with rows added: same rank ≥ 1, more rows, same other dims.
bool rows_added(const std::vector<int64_t>& base_shape, const std::vector<int64_t>& post_shape);

// Every tensor of either side, in post's order followed by base-only tensors.
std::vector<TensorPair> pair_tensors(const io::TensorSource& base, const io::TensorSource& post);

}  // namespace deltaedit::io
