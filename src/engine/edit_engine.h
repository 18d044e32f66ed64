// The edit engine: plans an edit of a (base, post) pair, streams every tensor through the op
// chain and writes W_pre + Δ' as a checkpoint laid out like post, or a compact delta pack.
// `apply` rebuilds from a pack, bit for bit, what `edit` writes in full.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "analysis/delta_stats.h"
#include "util/version.h"
#include "edit/op.h"
#include "io/checkpoint.h"
#include "io/tensor_source.h"
#include "util/big_buffer.h"
#include "util/name_regex.h"

namespace deltaedit::engine {

using util::kVersion;
inline constexpr uint64_t kDefaultMaxMemory = 768'000'000;  // bytes

// The validated op sequence with its name filters; built before any I/O.
struct OpChain {
  std::vector<edit::OpSpec> specs;
  std::vector<std::unique_ptr<edit::Op>> ops;
  std::vector<std::pair<util::NameRegex, util::NameRegex>> filters;  // per op: include, exclude
  util::NameRegex include, exclude;                                  // global
  uint64_t seed = 0;

  static OpChain build(const std::vector<std::string>& specs, uint64_t seed, const std::string& include,
                       const std::string& exclude);
  bool needs_grad() const;
  // Whether op i edits this tensor (filters and the op's own shape rule).
  bool touches(size_t i, const std::string& name, std::span<const int64_t> shape) const;
  bool touches_any(const std::string& name, std::span<const int64_t> shape) const;
  // What op i is told about a tensor (no gradient).
  edit::TensorContext context(size_t i, std::string_view name, std::span<const int64_t> shape) const;
  nlohmann::json describe() const;  // [{"op": name, "params": {...}}]
};

// Δ' of one tensor (f32) and what produced it.
struct TensorEdit {
  util::BigFloatBuffer edited;                  // Δ' (resize leaves values unset)
  std::optional<linalg::LowRankFactors> factors;  // set when the last op to touch it was lowrank
  std::vector<std::string> applied;             // names of the ops that touched it
};

// Computes Δ = post − base (f32) and runs the chain on it. `grad` (may be null) supplies
// ∇L(W_post) for ops that need it.
TensorEdit edit_tensor(const OpChain& chain, const io::Checkpoint& base, const io::TensorSource& post,
                       const std::string& name, const io::SafetensorsFile* grad);

// D = round_post(W_base + Δ') − W_post for every tensor the chain edits: the checkpoint `edit`
// writes (in post's dtype) minus post, so that on BF16/F16 pairs an edit's part lost to rounding
// is not counted (f32; Δ' from Δ = post − base exactly as the engine computes it). And ‖Δ‖² over
// those tensors: the input of the approximation term.
struct Increments {
  std::map<std::string, std::vector<float>> d;
  double delta_sumsq = 0;
};
Increments edit_increments(const OpChain& chain, const io::Checkpoint& base, const io::TensorSource& post,
                           const io::SafetensorsFile* grad);

struct EditRequest {
  // post: a checkpoint, or a PEFT adapter directory over base (io/peft.h)
  std::filesystem::path base, post, out;
  std::vector<std::string> ops;
  uint64_t seed = 0;
  std::string include, exclude;
  unsigned threads = 2;
  std::optional<io::DType> dtype;
  std::optional<uint64_t> max_shard_size;
  bool pack = false;
  std::optional<std::filesystem::path> grad;
  bool dry_run = false;
  // Tensor buffers all workers may hold at once (f32 Δ', op workspace, pack encodings); a tensor
  // that needs more runs alone. Bounds peak memory whatever the model size.
  uint64_t max_memory = kDefaultMaxMemory;
  // Tensors whose ops are all pointwise stream through in one pass without a whole-tensor
  // buffer; false forces the buffered path (same bytes; for comparisons).
  bool stream_pointwise = true;
};

struct TensorOutcome {
  std::string name;
  std::string action;  // edited | copied | converted
  std::vector<std::string> ops;
  analysis::EditStats stats;
  // NaN/Inf in the written tensor where neither input had one (base and post finite; from a
  // pack: base and Δ' finite): made by an op or by the output dtype's range
  uint64_t nonfinite_out = 0;
  std::string encoding;        // pack only
  uint64_t stored_bytes = 0;   // pack only
  uint64_t numel = 0;
};

struct EditResult {
  nlohmann::json plan;  // what was (or would be) done: tensors, scope of each op, bytes, estimates
  std::vector<TensorOutcome> tensors;
  analysis::EditStats total;
  uint64_t nonfinite_out = 0;
  uint64_t output_bytes = 0;
  nlohmann::json to_json() const;
};

using Progress = std::function<void(size_t done, size_t total, uint64_t bytes)>;

EditResult run_edit(const EditRequest& req, const Progress& progress = {});

struct ApplyRequest {
  std::filesystem::path base, pack, out;
  unsigned threads = 2;
  uint64_t max_memory = kDefaultMaxMemory;  // as in EditRequest
};
EditResult run_apply(const ApplyRequest& req, const Progress& progress = {});

// Parses "5GB", "500MB", "1.5GiB", "123" (bytes): decimal units as Hugging Face uses them.
uint64_t parse_size(const std::string& text);

}  // namespace deltaedit::engine
