#include "zoo/dataset.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "zoo/bpe.h"
#include "zoo/corpus.h"
#include "zoo/tasks.h"
#include "io/writer.h"
#include "util/error.h"

namespace deltaedit::zoo {
namespace {

void write_text(const std::filesystem::path& path, const std::string& text) { io::replace_file(path, text); }

}  // namespace

ZooDatasetSummary write_zoo_dataset(const std::filesystem::path& dir, const ZooDatasetOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::Io, "cannot create directory: " + ec.message(), dir.string());

  const TaskSplits splits = make_task_splits(options.seed, options.n_train, options.n_test);
  write_task_jsonl(dir / "tasks_train.jsonl", splits.train);
  write_task_jsonl(dir / "tasks_test.jsonl", splits.test);

  TaskSplits order;
  CorpusSkills skills;
  if (options.family) {
    order = make_order_splits(options.seed, options.n_order_train, options.n_order_test);
    write_task_jsonl(dir / "order_train.jsonl", order.train);
    write_task_jsonl(dir / "order_test.jsonl", order.test);
    const auto write_pairs = [&](const std::filesystem::path& path, const std::vector<TaskRecord>& recs,
                                 std::size_t n, uint64_t offset) {
      std::string text;
      for (std::size_t i = 0; i < std::min(n, recs.size()); ++i)
        text += preference_jsonl_line(make_preference_pair(options.seed, recs[i], offset + i)) + "\n";
      write_text(path, text);
    };
    write_pairs(dir / "dpo_train.jsonl", splits.train, options.n_dpo_train, 0);
    write_pairs(dir / "dpo_test.jsonl", splits.test, options.n_dpo_test, uint64_t{1} << 32);
    for (const auto& r : splits.test) skills.excluded_keys.insert(r.key);
    for (const auto& r : order.test) skills.excluded_keys.insert(r.key);
  }

  std::vector<std::string> texts;
  texts.push_back(corpus_text(options.seed, options.corpus_bytes, options.family ? &skills : nullptr));
  write_text(dir / "corpus.txt", texts.back());
  const std::size_t n_tok = std::min(options.tokenizer_task_records, splits.train.size());
  for (std::size_t i = 0; i < n_tok; ++i) texts.push_back(splits.train[i].prompt + splits.train[i].response);
  for (std::size_t i = 0; i < std::min(n_tok, order.train.size()); ++i)
    texts.push_back(order.train[i].prompt + order.train[i].response);
  const BpeModel model = train_bpe(texts, BpeOptions{.vocab_size = options.vocab_size});
  write_bpe_tokenizer(dir / "tokenizer", model);

  ZooDatasetSummary s;
  s.n_train = splits.train.size();
  s.n_test = splits.test.size();
  s.corpus_bytes = texts.front().size();
  s.vocab_size = model.vocab.size();
  s.merges = model.merges.size();
  s.n_order_train = order.train.size();
  s.n_order_test = order.test.size();
  s.n_dpo_train = options.family ? std::min(options.n_dpo_train, splits.train.size()) : 0;
  s.n_dpo_test = options.family ? std::min(options.n_dpo_test, splits.test.size()) : 0;

  nlohmann::ordered_json m;
  m["seed"] = options.seed;
  m["n_train"] = s.n_train;
  m["n_test"] = s.n_test;
  m["corpus_bytes"] = s.corpus_bytes;
  m["requested_vocab_size"] = options.vocab_size;
  m["vocab_size"] = s.vocab_size;
  m["merges"] = s.merges;
  m["tokenizer_task_records"] = n_tok;
  m["files"] = {"tasks_train.jsonl", "tasks_test.jsonl", "corpus.txt", "tokenizer/tokenizer.json",
                "tokenizer/tokenizer_config.json"};
  if (options.family) {
    m["family"] = true;
    m["n_order_train"] = s.n_order_train;
    m["n_order_test"] = s.n_order_test;
    m["n_dpo_train"] = s.n_dpo_train;
    m["n_dpo_test"] = s.n_dpo_test;
    for (const char* f : {"order_train.jsonl", "order_test.jsonl", "dpo_train.jsonl", "dpo_test.jsonl"})
      m["files"].push_back(f);
  }
  write_text(dir / "zoo_data.json", m.dump(2) + "\n");
  return s;
}

}  // namespace deltaedit::zoo
