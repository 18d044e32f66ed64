#include "zoo/dataset.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "zoo/bpe.h"
#include "zoo/corpus.h"
#include "zoo/tasks.h"
#include "util/error.h"

namespace deltaedit::zoo {
namespace {

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(ErrorKind::Io, "cannot open for writing", path.string());
  out << text;
  out.flush();
  if (!out) throw Error(ErrorKind::Io, "write failed", path.string());
}

}  // namespace

ZooDatasetSummary write_zoo_dataset(const std::filesystem::path& dir, const ZooDatasetOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::Io, "cannot create directory: " + ec.message(), dir.string());

  const TaskSplits splits = make_task_splits(options.seed, options.n_train, options.n_test);
  write_task_jsonl(dir / "tasks_train.jsonl", splits.train);
  write_task_jsonl(dir / "tasks_test.jsonl", splits.test);

  std::vector<std::string> texts;
  texts.push_back(corpus_text(options.seed, options.corpus_bytes));
  write_text(dir / "corpus.txt", texts.back());
  const std::size_t n_tok = std::min(options.tokenizer_task_records, splits.train.size());
  for (std::size_t i = 0; i < n_tok; ++i) texts.push_back(splits.train[i].prompt + splits.train[i].response);
  const BpeModel model = train_bpe(texts, BpeOptions{.vocab_size = options.vocab_size});
  write_bpe_tokenizer(dir / "tokenizer", model);

  ZooDatasetSummary s;
  s.n_train = splits.train.size();
  s.n_test = splits.test.size();
  s.corpus_bytes = texts.front().size();
  s.vocab_size = model.vocab.size();
  s.merges = model.merges.size();

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
  write_text(dir / "zoo_data.json", m.dump(2) + "\n");
  return s;
}

}  // namespace deltaedit::zoo
