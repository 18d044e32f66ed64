// config.json of a Hugging Face decoder: the fields deltaedit and its model runtime use.
// Accepts both the older `rope_theta` + `rope_scaling` layout and the newer `rope_parameters`.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace deltaedit::io {

struct RopeConfig {
  double theta = 10000.0;
  std::string type = "default";  // default | llama3 | linear | ...
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
};

struct ModelConfig {
  std::string architecture;  // architectures[0], e.g. LlamaForCausalLM
  std::string model_type;    // llama | qwen2 | mistral | qwen3 ...
  int64_t hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  int64_t num_attention_heads = 0, num_key_value_heads = 0, head_dim = 0, vocab_size = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // qwen2: q/k/v biases regardless of this flag
  bool mlp_bias = false;
  std::optional<int64_t> sliding_window;
  std::string hidden_act = "silu";
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;
  std::string torch_dtype;  // "float32", "bfloat16", ... as written
  nlohmann::json raw;       // the whole document
};

// Parses (strictly: duplicate keys, depth) and validates config.json; throws Error(Format) naming
// the file and the field.
ModelConfig parse_config(std::string_view text, const std::string& file);
ModelConfig load_config(const std::filesystem::path& path);

}  // namespace deltaedit::io
