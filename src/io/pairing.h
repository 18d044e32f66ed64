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

}  // namespace deltaedit::io
