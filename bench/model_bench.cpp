// Forward + backward throughput of the model runtime on a small Llama-shaped config.
// Usage: model_bench [--threads N] [--batch B] [--seq T] [--iters K] [--bf16]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "io/config.h"
#include "model/loss.h"
#include "model/transformer.h"

using namespace deltaedit;

int main(int argc, char** argv) {
  int threads = 2, iters = 5;
  int64_t batch = 4, seq = 128;
  bool bf16 = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::strtol(argv[++i], nullptr, 10);
    };
    if (a == "--threads") threads = int(next());
    else if (a == "--batch") batch = next();
    else if (a == "--seq") seq = next();
    else if (a == "--iters") iters = int(next());
    else if (a == "--bf16") bf16 = true;
    else {
      std::fprintf(stderr, "usage: model_bench [--threads N] [--batch B] [--seq T] [--iters K] [--bf16]\n");
      return 2;
    }
  }
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                        {"hidden_size", 256},  {"intermediate_size", 688},
                        {"num_hidden_layers", 4}, {"num_attention_heads", 8},
                        {"num_key_value_heads", 4}, {"vocab_size", 8000},
                        {"rms_norm_eps", 1e-5}, {"hidden_act", "silu"},
                        {"rope_theta", 500000.0},
                        {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}}}};
  model::set_num_threads(threads);
  model::LoadOptions opt;
  if (bf16) opt.dtype = torch::kBFloat16;
  auto m = model::Model::random(io::parse_config(cfg.dump(), "bench-config.json"), 1, opt);
  m.set_requires_grad(true);
  auto ids = torch::randint(8000, {batch, seq}, torch::kLong);
  model::Batch b{ids, {}, {}};
  auto step = [&](bool backward) {
    m.zero_grad();
    auto l = model::causal_lm_loss(m.forward(ids), b);
    if (backward) l.backward();
    return l.item<double>();
  };
  step(true);  // warm-up
  for (bool backward : {false, true}) {
    auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < iters; ++k) {
      torch::AutoGradMode mode(backward);
      step(backward);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-17s params=%lld batch=%lld seq=%lld threads=%d dtype=%s: %.0f tokens/s\n",
                backward ? "forward+backward" : "forward", (long long)m.num_params(), (long long)batch,
                (long long)seq, threads, bf16 ? "bf16" : "f32", double(batch * seq * iters) / s);
  }
  return 0;
}
