#include "io/config.h"

#include <fstream>
#include <sstream>

#include "io/safetensors.h"
#include "util/error.h"
#include "util/read_file.h"

namespace deltaedit::io {
namespace {
using nlohmann::json;

[[noreturn]] void bad(const std::string& file, const std::string& msg) {
  throw Error(ErrorKind::Format, msg, file);
}

int64_t get_int(const json& j, const char* key, int64_t def, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number_integer()) bad(file, std::string("'") + key + "' must be an integer");
  int64_t v = it->get<int64_t>();
  if (v < 0) bad(file, std::string("'") + key + "' must not be negative");
  return v;
}
double get_num(const json& j, const char* key, double def, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_number()) bad(file, std::string("'") + key + "' must be a number");
  return it->get<double>();
}
bool get_bool(const json& j, const char* key, bool def, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  if (!it->is_boolean()) bad(file, std::string("'") + key + "' must be true or false");
  return it->get<bool>();
}
std::optional<int64_t> get_opt_int(const json& j, const char* key, const std::string& file) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_array()) {  // some configs list several eos ids: keep the first
    if (it->empty() || !(*it)[0].is_number_integer()) bad(file, std::string("'") + key + "' is not an integer list");
    return (*it)[0].get<int64_t>();
  }
  if (!it->is_number_integer()) bad(file, std::string("'") + key + "' must be an integer");
  return it->get<int64_t>();
}

void parse_rope(const json& r, RopeConfig& rope, const std::string& file) {
  if (!r.is_object()) bad(file, "rope parameters must be an object");
  rope.theta = get_num(r, "rope_theta", rope.theta, file);
  for (const char* k : {"rope_type", "type"}) {
    auto it = r.find(k);
    if (it != r.end() && !it->is_null()) {
      if (!it->is_string()) bad(file, "rope type must be a string");
      rope.type = it->get<std::string>();
      break;
    }
  }
  rope.factor = get_num(r, "factor", rope.factor, file);
  rope.low_freq_factor = get_num(r, "low_freq_factor", rope.low_freq_factor, file);
  rope.high_freq_factor = get_num(r, "high_freq_factor", rope.high_freq_factor, file);
  rope.original_max_position_embeddings =
      get_int(r, "original_max_position_embeddings", rope.original_max_position_embeddings, file);
}
}  // namespace

ModelConfig parse_config(std::string_view text, const std::string& file) {
  json j = parse_json_strict(text, file);
  if (!j.is_object()) bad(file, "config.json is not a JSON object");
  ModelConfig c;
  c.raw = j;
  if (auto it = j.find("architectures"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || it->empty() || !(*it)[0].is_string())
      bad(file, "'architectures' must be a list of strings");
    c.architecture = (*it)[0].get<std::string>();
  }
  if (auto it = j.find("model_type"); it != j.end()) {
    if (!it->is_string()) bad(file, "'model_type' must be a string");
    c.model_type = it->get<std::string>();
  }
  c.hidden_size = get_int(j, "hidden_size", 0, file);
  c.intermediate_size = get_int(j, "intermediate_size", 0, file);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", 0, file);
  c.num_attention_heads = get_int(j, "num_attention_heads", 0, file);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", c.num_attention_heads, file);
  c.vocab_size = get_int(j, "vocab_size", 0, file);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", 0, file);
  int64_t hd = get_int(j, "head_dim", 0, file);
  c.head_dim = hd > 0 ? hd : (c.num_attention_heads > 0 ? c.hidden_size / c.num_attention_heads : 0);
  c.rms_norm_eps = get_num(j, "rms_norm_eps", c.rms_norm_eps, file);
  // Older layout: rope_theta + rope_scaling; newer: rope_parameters (which holds rope_theta).
  c.rope.theta = get_num(j, "rope_theta", c.rope.theta, file);
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) parse_rope(*it, c.rope, file);
  if (auto it = j.find("rope_parameters"); it != j.end() && !it->is_null()) parse_rope(*it, c.rope, file);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", false, file);
  c.attention_bias = get_bool(j, "attention_bias", false, file);
  c.mlp_bias = get_bool(j, "mlp_bias", false, file);
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer()) bad(file, "'sliding_window' must be an integer or null");
    bool use = get_bool(j, "use_sliding_window", true, file);
    if (use) c.sliding_window = it->get<int64_t>();
  }
  if (auto it = j.find("hidden_act"); it != j.end() && it->is_string()) c.hidden_act = it->get<std::string>();
  c.bos_token_id = get_opt_int(j, "bos_token_id", file);
  c.eos_token_id = get_opt_int(j, "eos_token_id", file);
  c.pad_token_id = get_opt_int(j, "pad_token_id", file);
  for (const char* k : {"torch_dtype", "dtype"})
    if (auto it = j.find(k); it != j.end() && it->is_string()) c.torch_dtype = it->get<std::string>();
  return c;
}

ModelConfig load_config(const std::filesystem::path& path) {
  return parse_config(util::read_file(path), path.string());
}

}  // namespace deltaedit::io
