// The in-house model pair: a small Llama-architecture LM pre-trained on a generated English corpus
// (base), then post-trained (SFT) on GSM8K-format arithmetic word problems (post). Deterministic
// for a seed and a thread count; outputs are Hugging Face checkpoints plus the data splits.
#pragma once
#include <cstdint>
#include <filesystem>
#include <cstddef>
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

// The model family (the default of `deltaedit zoo`): one base pre-trained on a corpus that also
// holds both tasks' content in prose, and light post-training of it:
//   base       pre-training on the skills corpus (CorpusSkills)
//   math-sft   SFT of base on the arithmetic task in GSM8K format
//   math-dpo   DPO of math-sft (reference = math-sft) on preference pairs of arithmetic problems
//   order-sft  SFT of base on the order task (the second expert)
// Every stage's recipe is recorded in its zoo.json; a stage already present in OUT with the same
// recipe is loaded instead of trained again (so an interrupted run continues).
struct FamilyOptions {
  uint64_t seed = 1;
  int threads = 1;
  int64_t hidden = 128, intermediate = 384, layers = 4, heads = 4, kv_heads = 2, vocab = 768;
  int64_t max_position = 256;
  // Windows of 128 tokens hold a whole word problem with its worked solution (60–90 tokens), so
  // the base meets the copy-and-compute skill in one piece (windows of 64 split most of them).
  int64_t pretrain_steps = 3000, pretrain_batch = 32, pretrain_seq = 128;
  double pretrain_lr = 3e-3;
  std::size_t corpus_bytes = std::size_t(2) << 20;
  int64_t sft_steps = 300, sft_batch = 32;
  double sft_lr = 3e-4;
  int64_t dpo_steps = 200, dpo_batch = 16;
  double dpo_lr = 1e-4, dpo_beta = 0.1;
  std::size_t n_train = 30000, n_test = 500, n_order_train = 20000, n_order_test = 500;
  std::size_t n_dpo_train = 8000, n_dpo_test = 200, n_eval = 200;
  int64_t max_new_tokens = 48;
  // Stop after this stage ("data", "base", "math-sft", "math-dpo"; empty = train everything).
  std::string stop_after;
};

// Writes OUT/data, OUT/base, OUT/math-sft, OUT/math-dpo, OUT/order-sft (each with zoo.json) and
// OUT/zoo.json (the summary: every stage's recipe and measured figures). OUT may hold an
// unfinished family of the same options.
nlohmann::json build_family(const std::filesystem::path& out, const FamilyOptions& opt, const ZooLog& log = {});

// Writes OUT/base, OUT/post (config.json, model.safetensors, tokenizer files, zoo.json) and
// OUT/data (tasks_train.jsonl, tasks_test.jsonl, eval.jsonl, corpus.txt). Returns the summary.
nlohmann::json build_zoo(const std::filesystem::path& out, const ZooOptions& opt, const ZooLog& log = {});

}  // namespace deltaedit::zoo
