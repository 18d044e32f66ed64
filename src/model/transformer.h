// Decoder-only language models (Llama, Mistral, Qwen2, Qwen3) on libtorch, matching the Hugging
// Face reference numerics: RMSNorm in f32, rotate-half RoPE (default, linear and llama3 scaling),
// grouped-query attention computed in f32 with a causal (optionally sliding-window) mask, and a
// SiLU-gated MLP. Parameters are plain tensors keyed by their Hugging Face names, so gradients and
// edits map one to one onto checkpoint tensors.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/types.h>
#include <torch/utils.h>

#include "io/checkpoint.h"
#include "io/config.h"

namespace deltaedit::model {

// Sets the number of intra-op threads libtorch uses (process-wide, libtorch's own setting).
void set_num_threads(int n);
int num_threads();

enum class Family { Llama, Mistral, Qwen2, Qwen3 };
const char* family_name(Family f);

// What a config asks of the runtime, resolved and validated.
struct ArchSpec {
  Family family = Family::Llama;
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  double rms_eps = 1e-6;
  bool qkv_bias = false;   // q/k/v projections carry a bias
  bool o_bias = false;     // o_proj carries a bias
  bool mlp_bias = false;   // gate/up/down carry biases
  bool qk_norm = false;    // per-head RMSNorm of q and k before RoPE (Qwen3)
  bool tied = false;       // lm_head shares model.embed_tokens.weight
  io::RopeConfig rope;
  // Per layer: the sliding attention window in tokens, or 0 for full causal attention.
  std::vector<int64_t> window;
};

// Resolves a config into an ArchSpec; throws Error(Unsupported) for an architecture, activation,
// RoPE type or option the runtime does not implement (the message lists what is supported), and
// Error(Format) for inconsistent sizes.
ArchSpec resolve_arch(const io::ModelConfig& config);

// RoPE inverse frequencies (head_dim / 2 values, f32) after the configured scaling.
torch::Tensor rope_inv_freq(const io::RopeConfig& rope, int64_t head_dim);

struct LoadOptions {
  torch::ScalarType dtype = torch::kFloat32;  // kFloat32 or kBFloat16
  torch::Device device = torch::kCPU;
};

// Keys and values of past positions, per layer, for incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // [B, kv_heads, past, head_dim] each, f32
  int64_t length = 0;               // number of cached positions
};

// The weights of one decoder layer (undefined tensors are absent: biases, q/k norms).
struct LayerWeights {
  torch::Tensor input_norm, post_norm;
  torch::Tensor q_w, k_w, v_w, o_w, q_b, k_b, v_b, o_b, q_norm, k_norm;
  torch::Tensor gate_w, up_w, down_w, gate_b, up_b, down_b;
};
// The Hugging Face name of each weight of layer l, in checkpoint order, with its member.
std::vector<std::pair<std::string, torch::Tensor LayerWeights::*>> layer_weight_names(const ArchSpec& a, int64_t l);

// What one forward pass shares across layers: RoPE tables and the attention masks (one per
// distinct window size, made on first use).
struct PassTables {
  int64_t B = 0, T = 0, past = 0;
  torch::Tensor cos, sin, causal, qidx, kidx, key_valid;
  std::unordered_map<int64_t, torch::Tensor> masks;
  const torch::Tensor& mask(int64_t window);
};
PassTables pass_tables(const torch::Tensor& inv_freq, const torch::Tensor& positions, const torch::Tensor& key_valid,
                       int64_t B, int64_t T, int64_t past, torch::Device device);
// Positions of a right- or left-padded batch: real tokens counted from 0 (padding clamped to 0).
torch::Tensor batch_positions(const torch::Tensor& valid);

// One decoder layer: x [B, T, hidden] in the compute dtype -> the layer's output. Extends the
// cache's layer l when one is given.
torch::Tensor decoder_layer(const ArchSpec& a, const LayerWeights& w, const torch::Tensor& x, PassTables& tables,
                            size_t l, torch::ScalarType dtype, KVCache* cache = nullptr);
// The final RMSNorm (f32 statistics, result in x's dtype, scaled by the weight).
torch::Tensor final_norm(const ArchSpec& a, const torch::Tensor& x, const torch::Tensor& norm_w);
// Final norm and head: hidden states -> logits [B, T, vocab] in f32.
torch::Tensor output_logits(const ArchSpec& a, const torch::Tensor& x, const torch::Tensor& norm_w,
                            const torch::Tensor& head_w);

class Model {
 public:
  // Movable, not copyable: a copy would silently share parameter storage (use state()).
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Loads every parameter from a checkpoint (any stored float dtype is converted). Missing or
  // misshapen tensors throw Error(Format); tensors the architecture does not use throw
  // Error(Unsupported), except RoPE caches and a redundant lm_head of a tied model (see warnings()).
  // checkpoint: a Checkpoint, or another source of W (a PEFT adapter over its base, io/peft.h).
  static Model load(const io::TensorSource& checkpoint, const LoadOptions& options = {});
  // A model with the config's shapes and random N(0, 0.02²) weights (norms at 1), for tests and
  // benchmarks.
  static Model random(const io::ModelConfig& config, uint64_t seed, const LoadOptions& options = {});

  const io::ModelConfig& config() const { return config_; }
  const ArchSpec& arch() const { return arch_; }
  torch::ScalarType dtype() const { return options_.dtype; }
  torch::Device device() const { return options_.device; }
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Logits [B, T, vocab] in f32. input_ids: [B, T] integer token ids. attention_mask: optional
  // [B, T], nonzero = real token; padded keys are never attended to and positions count real
  // tokens only (so left and right padding give the same logits for the real tokens).
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {});
  // Incremental forward: appends input_ids [B, T] after the cache's positions (no padding) and
  // extends the cache. Returns logits [B, T, vocab] in f32.
  torch::Tensor forward(const torch::Tensor& input_ids, KVCache& cache);

  // Greedy decoding with a KV cache for a single sequence: returns the new tokens (without the
  // prompt), stopping after max_new_tokens or after emitting eos (which is included).
  std::vector<int64_t> generate(std::span<const int64_t> prompt, int64_t max_new_tokens,
                                std::optional<int64_t> eos = std::nullopt);

  // Parameter names in checkpoint order (Hugging Face names; a tied model has no lm_head.weight).
  const std::vector<std::string>& param_names() const { return names_; }
  bool has_param(std::string_view name) const;
  torch::Tensor& param(std::string_view name);
  const torch::Tensor& param(std::string_view name) const;
  int64_t num_params() const;

  void set_requires_grad(bool on);
  void zero_grad();

  // In place, without autograd: param(name) += t * d (d is converted to the parameter's dtype and
  // device; the update is computed in f32 when the parameter is bf16, then rounded once).
  void add_(std::string_view name, const torch::Tensor& d, double t = 1.0);
  // In place, without autograd: param(name) = values (any dtype/device, same shape).
  void set_(std::string_view name, const torch::Tensor& values);
  // param(name) = f32 values (row-major, numel of the parameter).
  void set_(std::string_view name, std::span<const float> values);
  // Copies of every parameter (detached clones), to restore after walking a path.
  std::unordered_map<std::string, torch::Tensor> state() const;
  void load_state(const std::unordered_map<std::string, torch::Tensor>& state);

 private:
  struct Layer {
    int input_norm = -1, post_norm = -1;
    int q_w = -1, k_w = -1, v_w = -1, o_w = -1, q_b = -1, k_b = -1, v_b = -1, o_b = -1;
    int q_norm = -1, k_norm = -1;
    int gate_w = -1, up_w = -1, down_w = -1, gate_b = -1, up_b = -1, down_b = -1;
  };
  Model() = default;
  static Model build(const io::ModelConfig& config, const LoadOptions& options);
  int add_param(const std::string& name, std::vector<int64_t> shape);
  int index(std::string_view name) const;
  const torch::Tensor& p(int i) const { return params_[size_t(i)]; }
  torch::Tensor run(const torch::Tensor& input_ids, const torch::Tensor& positions,
                    const torch::Tensor& key_valid, KVCache* cache);

  io::ModelConfig config_;
  ArchSpec arch_;
  LoadOptions options_;
  std::vector<std::string> names_;
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<torch::Tensor> params_;
  std::unordered_map<std::string, int> by_name_;
  std::vector<Layer> layers_;
  int embed_ = -1, final_norm_ = -1, lm_head_ = -1;
  torch::Tensor inv_freq_;  // f32, on device
  std::vector<std::string> warnings_;
};

}  // namespace deltaedit::model
