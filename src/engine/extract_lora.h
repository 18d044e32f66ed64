// extract-lora: a PEFT LoRA adapter of the truncated SVD of Δ = W_post − W_base.
//
// Per 2-D linear weight M.weight (out×in) with Δ ≠ 0, the lowrank op of `edit` (the same op, seed
// and tensor key, so the same factors as `edit --op lowrank:rank=r,...`) gives Δ_r = U·diag(S)·Vᵀ,
// written as A = √S·Vᵀ (r×in, lora_A) and B = U·√S (out×r, lora_B) in F32, with lora_alpha = r so
// that peft's scaling is 1. Where r reaches min(out, in) the truncation is Δ itself and the exact
// factors are written instead (B = I, A = Δ, or A = I, B = Δ): B·A = Δ exactly. Embedding tensors
// (embed_tokens) are included only when --include names them, as embedding LoRA
// (lora_embedding_A = √S·Uᵀ, lora_embedding_B = V·√S: peft's transposed convention).
//
// Modules whose ranks differ from the config's r get rank_pattern and alpha_pattern entries
// ("^" + the module name with regex metacharacters escaped; alpha = rank, so scaling stays 1).
// Everything else that differs (norms, biases, by default embeddings and lm_head, tensors only
// in post) is listed as left out with its ‖Δ‖, or saved whole with --save-modules (peft's
// modules_to_save). --vllm: every rank rounded up into {1, 8, 16, 32, 64, 128, 256, 320, 512}
// (factors padded with zeros where the matrix is smaller), r = the largest rank, no
// modules_to_save, no bias keys.
//
// Output through the staging protocol (io/writer.h); before the rename the adapter is re-read
// as a --post over the base (io/peft.h) to validate it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/edit_engine.h"

namespace deltaedit::engine {

struct ExtractLoraRequest {
  std::filesystem::path base, post, out;
  std::optional<int64_t> rank;  // exactly one of rank, energy
  std::optional<double> energy;  // smallest r with Σ_{i≤r} σ_i² ≥ energy·Σ σ_i² (exact SVD)
  std::string include, exclude;  // tensor-name regexes (PCRE2, unanchored)
  std::vector<std::string> save_modules;
  bool vllm = false;
  std::string method = "auto";  // auto | exact | randomized (rank only)
  uint64_t seed = 0;
  unsigned threads = 2;
  uint64_t max_memory = kDefaultMaxMemory;
};

// vLLM's LoRA ranks; a rank is rounded up to the next one.
inline constexpr int64_t kVllmRanks[] = {1, 8, 16, 32, 64, 128, 256, 320, 512};
// Throws Error(Usage) above 512.
int64_t vllm_rank(int64_t r);

struct ExtractedModule {
  std::string module, tensor;
  bool embedding = false;
  int64_t rows = 0, cols = 0;
  int64_t rank = 0;       // rank written (after --vllm rounding and padding)
  int64_t svd_rank = 0;   // rank of the truncation (≤ rank)
  std::string method;     // exact | randomized | full (r ≥ min(rows, cols): Δ itself)
  double delta_norm = 0;  // ‖Δ‖_F
  double error_norm = 0;  // ‖Δ − B·A‖_F, B·A as lowrank reconstructs it, in f64
  uint64_t bytes = 0;     // bytes of lora_A + lora_B
  double rel_error() const { return delta_norm > 0 ? error_norm / delta_norm : 0.0; }
};

struct LeftOutTensor {
  std::string tensor, reason;
  double delta_norm = 0;  // 0 when not comparable (only in post, shapes differ)
};

struct SavedTensor {
  std::string tensor;
  uint64_t bytes = 0;
};

struct ExtractLoraResult {
  std::vector<ExtractedModule> modules;
  std::vector<LeftOutTensor> left_out;
  std::vector<SavedTensor> saved;
  uint64_t unchanged = 0;  // tensors with Δ = 0
  uint64_t adapter_bytes = 0;
  nlohmann::json adapter_config;
  nlohmann::json to_json() const;
};

ExtractLoraResult run_extract_lora(const ExtractLoraRequest& req, const Progress& progress = {});

}  // namespace deltaedit::engine
