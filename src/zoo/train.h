// The in-house model pair: a small Llama-architecture LM pre-trained on a generated English corpus
// (base), then post-trained (SFT) on GSM8K-format arithmetic word problems (post). Deterministic
// for a seed and a thread count; outputs are Hugging Face checkpoints plus the data splits.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

namespace deltaedit::zoo {

struct ZooOptions {
  uint64_t seed = 1;
  // Architecture.
  int64_t hidden = 128, intermediate = 384, layers = 4, heads = 4, kv_heads = 2, vocab = 768;
  int64_t max_position = 256;
  // Pre-training on the corpus.
  int64_t pretrain_steps = 1200, pretrain_batch = 32, pretrain_seq = 64;
  double pretrain_lr = 3e-3;
  // Post-training on the task.
  int64_t sft_steps = 1500, sft_batch = 32;
  double sft_lr = 2e-3;
  size_t n_train = 30000, n_test = 500, n_eval = 200;
  size_t corpus_bytes = size_t(1) << 20;
  int threads = 1;  // the shipped pair was trained with 1 thread (part of the determinism key)
  int64_t max_new_tokens = 48;
};

using ZooLog = std::function<void(const std::string&)>;

// Writes OUT/base, OUT/post (config.json, model.safetensors, tokenizer files, zoo.json) and
// OUT/data (tasks_train.jsonl, tasks_test.jsonl, eval.jsonl, corpus.txt). Returns the summary.
nlohmann::json build_zoo(const std::filesystem::path& out, const ZooOptions& opt, const ZooLog& log = {});

}  // namespace deltaedit::zoo
