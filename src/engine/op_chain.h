// The op chain of an edit (SPEC §2): the validated op sequence with its name filters, and the
// whole-tensor edit of one tensor through it.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/dtype.h"

#include "edit/op.h"
#include "io/checkpoint.h"
#include "io/tensor_source.h"
#include "util/big_buffer.h"
#include "util/name_regex.h"

namespace deltaedit::engine {

// The validated op sequence with its name filters; built before any I/O.
struct OpChain {
  std::vector<edit::OpSpec> specs;
  std::vector<std::unique_ptr<edit::Op>> ops;
  std::vector<std::pair<util::NameRegex, util::NameRegex>> filters;  // per op: include, exclude
  util::NameRegex include, exclude;                                  // global
  uint64_t seed = 0;

  static OpChain build(const std::vector<std::string>& specs, uint64_t seed,
                       const std::string& include, const std::string& exclude);
  bool needs_grad() const;
  // Whether op i edits this tensor (filters and the op's own shape rule).
  bool touches(size_t i, const std::string& name, std::span<const int64_t> shape) const;
  bool touches_any(const std::string& name, std::span<const int64_t> shape) const;
  // What op i is told about a tensor (no gradient).
  edit::TensorContext context(size_t i, std::string_view name,
                              std::span<const int64_t> shape) const;
  nlohmann::json describe() const;  // [{"op": name, "params": {...}}]
};

// Δ' of one tensor (f32) and what produced it.
struct TensorEdit {
  util::BigFloatBuffer edited;                    // Δ' (resize leaves values unset)
  std::optional<linalg::LowRankFactors> factors;  // set when the last op to touch it was lowrank
  std::vector<std::string> applied;               // names of the ops that touched it
};

// Computes Δ = post − base (f32) and runs the chain on it. `grad` (may be null) supplies
// ∇L(W_post) for ops that need it.
TensorEdit edit_tensor(const OpChain& chain, const io::Checkpoint& base,
                       const io::TensorSource& post, const std::string& name,
                       const io::SafetensorsFile* grad);

// D = Δ' − Δ for every tensor the chain edits (f32, Δ recomputed as post − base exactly as the
// engine does), and ‖Δ‖² over those tensors: the input of the approximation term.
struct Increments {
  std::map<std::string, std::vector<float>> d;
  double delta_sumsq = 0;
};
// W' rounded to the output dtype and back to f32, in place (a no-op for F32 outputs): what a
// checkpoint written in `out` holds.
void round_to_output(std::span<float> w, io::DType out);

Increments edit_increments(const OpChain& chain, const io::Checkpoint& base,
                           const io::TensorSource& post, const io::SafetensorsFile* grad);

}  // namespace deltaedit::engine
