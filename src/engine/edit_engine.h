// The edit engine: plans an edit of a (base, post) pair (engine/edit_plan.h), runs every tensor
// through the op chain on the shared executor (engine/executor.h, kernels in engine/edit_kernel.h)
// and writes W_pre + Δ' as a checkpoint laid out like post (engine/layout.h), or a compact delta
// pack (engine/pack_sink.h). `apply` rebuilds from a pack, bit for bit, what `edit` writes in full.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "analysis/delta_stats.h"
#include "edit/op.h"
#include "engine/op_chain.h"
#include "io/checkpoint.h"
#include "io/tensor_source.h"
#include "util/big_buffer.h"
#include "util/name_regex.h"
#include "util/version.h"

namespace deltaedit::engine {

using util::kVersion;
inline constexpr uint64_t kDefaultMaxMemory = 768'000'000;  // bytes

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
  std::string encoding;       // pack only
  uint64_t stored_bytes = 0;  // pack only
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
