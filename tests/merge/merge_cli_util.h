// Helpers for merge tests: configs in temp dirs, small synthetic models with config.json, and
// reading output tensors as f32.
#pragma once
#include <fstream>
#include <string>
#include <vector>

#include "../engine/engine_test_util.h"
#include "io/checkpoint.h"
#include "io/convert.h"

namespace deltaedit::testing {

inline fs::path write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
  return p;
}

// A llama-shaped model directory: config.json plus one safetensors file of `tensors`.
inline void write_model(const fs::path& dir, const std::vector<SynthTensor>& tensors, int layers,
                        const std::string& extra_config = {}) {
  fs::create_directories(dir);
  write_text(dir / "config.json",
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
             "\"num_hidden_layers\": " +
                 std::to_string(layers) + ", \"torch_dtype\": \"float32\"" + extra_config + "}\n");
  write_safetensors(dir / "model.safetensors", tensors);
}

inline std::vector<float> read_f32(const io::Checkpoint& ck, const std::string& name) {
  const auto& info = ck.info(name);
  std::vector<float> v(info.numel());
  io::to_f32(ck.data(name), info.dtype, v);
  return v;
}

inline std::string fix(const std::string& rel) { return fixture("llama/" + rel).string(); }

}  // namespace deltaedit::testing
