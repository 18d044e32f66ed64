// PEFT LoRA adapters: a directory with adapter_config.json and adapter_model.safetensors.
//
// Reading (strict): the config through the project's strict JSON layer (duplicate keys, depth,
// UTF-8), the weights through the strict safetensors reader. Over a base checkpoint an adapter is
// a TensorSource whose tensors are the base's, except
//   - every LoRA module M (keys base_model.model.M.lora_A.weight / .lora_B.weight):
//       W_post = W_base + s·B·A          (A: r×in, B: out×r, W: out×in)
//       W_post = W_base + s·(B·A)ᵀ       with fan_in_fan_out (W stored in×out, as GPT-2's Conv1D)
//   - every embedding LoRA module M (base_model.model.M.lora_embedding_A / _B, A: r×vocab,
//     B: dim×r, W: vocab×dim): W_post = W_base + s·(B·A)ᵀ
//   - tensors stored whole (modules_to_save, and embedding layers peft saves beside their LoRA as
//     M.base_layer.weight), which replace the base's,
// with s = alpha/r (alpha/√r with use_rslora), r and alpha taken from rank_pattern / alpha_pattern
// where a key matches the module name the way peft matches it (the first key K, in file order,
// for which the Python regex (.*\.)?(K)$ matches the whole name), else from r / lora_alpha.
//
// Arithmetic (peft's merge_and_unload with its default safe_merge=False, adapter weights upcast to
// f32 as PeftModel.from_pretrained does by default): P = B·A in f32 (BLAS, single-threaded),
// D = P·f32(s) rounded to f32, W_post = f32(W_base) + D rounded to f32, then once to the base's
// dtype (nearest-even). Tensors stored whole are converted to the base's dtype the same way.
//
// Refused with a typed error naming the file, the key or module, and what is supported: DoRA
// (use_dora, lora_magnitude_vector), lora_bias / lora_B.bias, bias other than "none", peft types
// other than LORA, other LoRA variants (layer_replication, target_parameters, trainable tokens,
// aLoRA), a module the base lacks or not matched by target_modules, factor shapes that do not fit
// the base tensor or the configured rank, keys that are neither factors nor saved modules.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint.h"
#include "io/tensor_source.h"
#include "util/name_regex.h"

namespace deltaedit::io {

inline constexpr const char* kAdapterConfigName = "adapter_config.json";
inline constexpr const char* kAdapterWeightsName = "adapter_model.safetensors";
inline constexpr const char* kPeftKeyPrefix = "base_model.model.";

// adapter_config.json of a LoRA adapter: the fields that decide the merged weights.
struct LoraConfig {
  int64_t r = 8;
  double lora_alpha = 8;
  bool use_rslora = false;
  bool fan_in_fan_out = false;
  // In file order (peft takes the first matching key).
  std::vector<std::pair<std::string, int64_t>> rank_pattern;
  std::vector<std::pair<std::string, double>> alpha_pattern;
  // target_modules: a list of names (exact, or a suffix after a '.'), or one regex matched against
  // the whole module name; "all-linear" matches every module. exclude_modules likewise.
  std::vector<std::string> target_list, exclude_list;
  std::string target_regex, exclude_regex;
  bool all_linear = false;
  std::vector<std::string> modules_to_save;
  std::string base_model_name_or_path;
  std::string task_type;
  std::vector<std::string> ignored;  // fields present that do not change the merged weights

  int64_t rank_for(const std::string& module) const;
  double alpha_for(const std::string& module) const;
  // alpha/r or alpha/√r (use_rslora) for this module's rank and alpha.
  double scaling_for(const std::string& module) const;
  bool targets(const std::string& module) const;
  bool saves(const std::string& module) const;  // modules_to_save: the name ends with an entry

  std::string file;  // for errors
  // Compiled patterns (same order as the vectors above).
  std::vector<util::NameRegex> rank_re, alpha_re;
  util::NameRegex target_re, exclude_re;
};

// Parses and validates adapter_config.json; throws Error(Format) naming the file and the field,
// Error(Unsupported) for adapters whose kind is not plain LoRA.
LoraConfig parse_adapter_config(std::string_view text, const std::string& file);

// A directory holding adapter_config.json.
bool is_peft_adapter(const std::filesystem::path& path);

// Peft's pattern match: the Python regex (.*\.)?(key)$ matched at the start of `name`.
bool peft_pattern_matches(const util::NameRegex& compiled, const std::string& name);
util::NameRegex compile_peft_pattern(const std::string& key, const std::string& file,
                                     const std::string& field);

// One module the adapter changes.
struct LoraModule {
  enum class Kind { Linear, Embedding, Whole };
  Kind kind = Kind::Linear;
  std::string module;  // e.g. model.layers.0.self_attn.q_proj
  std::string tensor;  // the base tensor it forms, e.g. model.layers.0.self_attn.q_proj.weight
  std::string key_a, key_b;  // factors; Whole: key_a is the stored tensor
  int64_t rank = 0;
  double scaling = 0;
  bool transposed = false;  // delta = (B·A)ᵀ: fan_in_fan_out, and every embedding LoRA
};

// An adapter read and checked against a base; a TensorSource of W_post.
class AdapterSource final : public TensorSource {
 public:
  static constexpr uint64_t kFormRows = 64;  // rows of W per product block while forming

  // `base` must outlive the source.
  static std::unique_ptr<AdapterSource> open(const std::filesystem::path& dir,
                                             const Checkpoint& base);

  const LoraConfig& config_file() const { return cfg_; }
  const std::vector<LoraModule>& modules() const { return modules_; }
  const SafetensorsFile& weights() const { return weights_; }
  // The module forming tensor `name`, or null when the tensor is the base's.
  const LoraModule* module_of(std::string_view name) const;

  const std::filesystem::path& path() const override { return dir_; }
  const std::vector<std::string>& names() const override { return base_.names(); }
  bool contains(std::string_view name) const override { return base_.contains(name); }
  const TensorInfo& info(std::string_view name) const override;
  std::span<const std::byte> data(std::string_view name) const override;
  void release(std::string_view name) const override;
  void release_range(std::string_view name, uint64_t offset, uint64_t bytes) const override;
  uint64_t formed_bytes(std::string_view name) const override;
  bool is_directory() const override { return base_.is_directory(); }
  bool is_sharded() const override { return base_.is_sharded(); }
  std::vector<std::string> shard_names() const override { return base_.shard_names(); }
  size_t shard_of(std::string_view name) const override { return base_.shard_of(name); }
  const std::optional<ModelConfig>& config() const override { return base_.config(); }
  std::optional<std::filesystem::path> config_path() const override { return base_.config_path(); }
  const std::vector<std::filesystem::path>& extra_files() const override {
    return base_.extra_files();
  }
  const std::vector<std::string>& warnings() const override { return warnings_; }
  uint64_t total_bytes() const override { return base_.total_bytes(); }
  uint64_t total_params() const override { return base_.total_params(); }
  std::vector<std::filesystem::path> input_paths() const override;

 private:
  AdapterSource(const std::filesystem::path& dir, const Checkpoint& base, LoraConfig cfg,
                SafetensorsFile weights);
  std::vector<std::byte> form(const LoraModule& m) const;

  std::filesystem::path dir_;
  const Checkpoint& base_;
  LoraConfig cfg_;
  SafetensorsFile weights_;
  std::vector<LoraModule> modules_;
  std::map<std::string, size_t, std::less<>> by_tensor_;  // base tensor -> modules_ index
  std::map<std::string, TensorInfo, std::less<>> infos_;  // formed tensors: base dtype, shape
  std::vector<std::string> warnings_;
  struct Formed {
    std::once_flag once;
    std::vector<std::byte> bytes;
  };
  mutable std::mutex mu_;
  mutable std::map<std::string, std::shared_ptr<Formed>, std::less<>> formed_;
};

// `post` as the engine reads it: a PEFT adapter directory over `base` (which must outlive the
// result), or else a checkpoint.
std::unique_ptr<TensorSource> open_post(const std::filesystem::path& post, const Checkpoint& base);

}  // namespace deltaedit::io
