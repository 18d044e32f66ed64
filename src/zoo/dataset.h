// One call that writes every data file the zoo's models are trained and evaluated on:
//   <dir>/tasks_train.jsonl        {"prompt", "response"} per line (post-training)
//   <dir>/tasks_test.jsonl         held-out problems (evaluation), disjoint from train
//   <dir>/corpus.txt               pre-training text, documents separated by blank lines
//   <dir>/tokenizer/tokenizer.json, tokenizer_config.json
//   <dir>/zoo_data.json            the options used and the resulting sizes
// With `family` (the model family's data) also:
//   <dir>/order_train.jsonl, order_test.jsonl   the second task (make_order_task), disjoint splits
//   <dir>/dpo_train.jsonl, dpo_test.jsonl       {"prompt", "chosen", "rejected"} preference pairs
//                                               of the arithmetic train / test problems
// and the corpus carries both tasks' content in prose (CorpusSkills, test keys excluded).
// Everything is a pure function of the options.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>

namespace deltaedit::zoo {

struct ZooDatasetOptions {
  uint64_t seed = 20240601;
  std::size_t n_train = 30000;
  std::size_t n_test = 500;
  std::size_t corpus_bytes = std::size_t{1} << 20;
  // The generated text saturates at roughly 940 useful tokens; larger requests stop early.
  std::size_t vocab_size = 768;
  // How many train problems join the corpus in the tokenizer's training mix.
  std::size_t tokenizer_task_records = 20000;
  // The family's data (see above).
  bool family = false;
  std::size_t n_order_train = 20000, n_order_test = 500;
  std::size_t n_dpo_train = 8000, n_dpo_test = 200;
};

struct ZooDatasetSummary {
  std::size_t n_train = 0, n_test = 0, corpus_bytes = 0, vocab_size = 0, merges = 0;
  std::size_t n_order_train = 0, n_order_test = 0, n_dpo_train = 0, n_dpo_test = 0;
};

// Creates `dir` when missing and (over)writes the files above. Throws Error(Io) on failure.
ZooDatasetSummary write_zoo_dataset(const std::filesystem::path& dir,
                                    const ZooDatasetOptions& options = {});

}  // namespace deltaedit::zoo
