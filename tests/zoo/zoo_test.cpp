// Zoo data: task generator (determinism, splits, correctness), answer extraction, pre-training
// corpus and the byte-level BPE tokenizer trained on them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "text/tokenizer.h"
#include "text/gsm8k.h"
#include "zoo/bpe.h"
#include "zoo/corpus.h"
#include "zoo/dataset.h"
#include "zoo/tasks.h"
#include "util/error.h"
#include "util/philox.h"

namespace fs = std::filesystem;
using namespace deltaedit::zoo;
using deltaedit::text::Tokenizer;
using deltaedit::text::answers_match;
using deltaedit::text::extract_answer;

namespace {

std::vector<int> numbers_in(std::string_view s) {
  std::vector<int> out;
  for (std::size_t i = 0; i < s.size();) {
    if (std::isdigit(static_cast<unsigned char>(s[i]))) {
      int v = 0;
      while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) v = v * 10 + (s[i++] - '0');
      out.push_back(v);
    } else {
      ++i;
    }
  }
  return out;
}

std::size_t word_count(std::string_view s) {
  std::istringstream in{std::string(s)};
  std::string w;
  std::size_t n = 0;
  while (in >> w) ++n;
  return n;
}

class TempDir {
 public:
  explicit TempDir(const std::string& tag = "") {
    path_ = fs::temp_directory_path() /
            ("deltaedit_zoo_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name() + tag);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// ------------------------------------------------------------------------------------------------
// Tasks

TEST(ZooTasks, SameSeedSameRecordsDifferentSeedDifferent) {
  const TaskSplits a = make_task_splits(7, 2000, 200);
  const TaskSplits b = make_task_splits(7, 2000, 200);
  const TaskSplits c = make_task_splits(8, 2000, 200);
  ASSERT_EQ(a.train.size(), 2000u);
  ASSERT_EQ(a.test.size(), 200u);
  std::size_t same_as_c = 0;
  for (std::size_t i = 0; i < a.train.size(); ++i) {
    EXPECT_EQ(a.train[i].prompt, b.train[i].prompt);
    EXPECT_EQ(a.train[i].response, b.train[i].response);
    EXPECT_EQ(a.train[i].key, b.train[i].key);
    same_as_c += a.train[i].prompt == c.train[i].prompt;
  }
  for (std::size_t i = 0; i < a.test.size(); ++i) EXPECT_EQ(task_jsonl_line(a.test[i]), task_jsonl_line(b.test[i]));
  EXPECT_LT(same_as_c, 20u);
  EXPECT_NE(a.test[0].prompt + a.test[1].prompt, c.test[0].prompt + c.test[1].prompt);
  // Records are pure functions of (seed, stream, index).
  EXPECT_EQ(make_task(7, "test", 3).prompt, make_task(7, "test", 3).prompt);
  EXPECT_NE(make_task(7, "test", 3).prompt, make_task(7, "train", 3).prompt);
}

TEST(ZooTasks, SmallerSplitsArePrefixes) {
  const TaskSplits big = make_task_splits(3, 1500, 300);
  const TaskSplits small = make_task_splits(3, 500, 300);
  for (std::size_t i = 0; i < small.train.size(); ++i) EXPECT_EQ(small.train[i].key, big.train[i].key);
  for (std::size_t i = 0; i < small.test.size(); ++i) EXPECT_EQ(small.test[i].key, big.test[i].key);
}

TEST(ZooTasks, SplitsAreDisjoint) {
  const TaskSplits s = make_task_splits(11, 30000, 500);
  std::set<std::string> test_keys, test_prompts;
  for (const auto& r : s.test) {
    EXPECT_TRUE(test_keys.insert(r.key).second) << "duplicate test key " << r.key;
    test_prompts.insert(r.prompt);
  }
  std::set<std::string> train_keys;
  for (const auto& r : s.train) {
    EXPECT_FALSE(test_keys.contains(r.key)) << r.key;
    EXPECT_FALSE(test_prompts.contains(r.prompt)) << r.prompt;
    EXPECT_TRUE(train_keys.insert(r.key).second) << "duplicate train key " << r.key;
  }
}

TEST(ZooTasks, ResponsesAreCorrectAndFormatIsSimple) {
  const TaskSplits s = make_task_splits(5, 20000, 500);
  std::vector<TaskRecord> all = s.test;
  all.insert(all.end(), s.train.begin(), s.train.end());
  std::set<std::string> structures;
  for (const auto& r : all) {
    SCOPED_TRACE(r.prompt + r.response);
    // The true value, recomputed from the problem's numbers.
    const int truth = solve_task(r.ops, r.numbers);
    EXPECT_EQ(truth, r.answer);
    EXPECT_EQ(extract_answer(r.response), std::to_string(truth));
    EXPECT_TRUE(answers_match(extract_answer(r.response), std::to_string(truth)));
    // The prompt states exactly these numbers, in order.
    EXPECT_EQ(numbers_in(r.prompt), r.numbers);
    // 2-3 steps; each step is one correct equation "a op b = c." chaining from the last.
    ASSERT_TRUE(r.ops.size() == 2 || r.ops.size() == 3);
    for (std::size_t i = 1; i < r.ops.size(); ++i) EXPECT_NE(r.ops[i], TaskOp::Mul);
    std::istringstream in(r.response);
    int value = r.numbers[0];
    for (std::size_t i = 0; i < r.ops.size(); ++i) {
      int a = 0, b = 0, c = 0;
      char op = 0, eq = 0, dot = 0;
      ASSERT_TRUE(in >> a >> op >> b >> eq >> c >> dot);
      EXPECT_EQ(eq, '=');
      EXPECT_EQ(dot, '.');
      EXPECT_EQ(a, value);
      EXPECT_EQ(b, r.numbers[i + 1]);
      const int expect = op == '+' ? a + b : op == '-' ? a - b : op == '*' ? a * b : -1000;
      EXPECT_EQ(c, expect);
      EXPECT_GE(c, 0);
      EXPECT_LE(c, 99);
      EXPECT_LE(b, 20);
      value = c;
    }
    std::string marker;
    int final_answer = -1;
    ASSERT_TRUE(in >> marker >> final_answer);
    EXPECT_EQ(marker, "####");
    EXPECT_EQ(final_answer, value);
    std::string rest;
    EXPECT_FALSE(in >> rest);
    // Short prompt, one trailing newline, no answer marker in it.
    EXPECT_LE(word_count(r.prompt), 40u);
    EXPECT_TRUE(r.prompt.ends_with("?\n"));
    EXPECT_EQ(r.prompt.find('#'), std::string::npos);
    EXPECT_EQ(r.prompt.find('\n'), r.prompt.size() - 1);
    structures.insert(r.key.substr(0, r.key.find('|')));
  }
  // Every structure shows up: 2 or 3 add/sub steps after "has", 1 or 2 after "mul".
  EXPECT_EQ(structures.size(), 4u + 8u + 2u + 4u);
}

TEST(ZooTasks, SolveTaskChecksArity) {
  const std::vector<TaskOp> ops{TaskOp::Mul, TaskOp::Sub};
  EXPECT_EQ(solve_task(ops, std::vector<int>{3, 4, 5}), 7);
  EXPECT_THROW(solve_task(ops, std::vector<int>{3, 4}), deltaedit::Error);
}

TEST(ZooTasks, WritesJsonl) {
  TempDir dir;
  const TaskSplits s = make_task_splits(1, 50, 10);
  const fs::path p = dir.path() / "test.jsonl";
  write_task_jsonl(p, s.test);
  std::ifstream in(p);
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    ASSERT_EQ(j.size(), 2u);
    EXPECT_EQ(j.at("prompt").get<std::string>(), s.test[n].prompt);
    EXPECT_EQ(j.at("response").get<std::string>(), s.test[n].response);
    ++n;
  }
  EXPECT_EQ(n, 10u);
  EXPECT_EQ(task_jsonl_line(s.test[0]).find('\n'), std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Answers

TEST(ZooCorpus, DeterministicAndFreeOfTaskFormat) {
  const std::string a = corpus_text(4, 1 << 20);
  EXPECT_GE(a.size(), std::size_t{1} << 20);
  EXPECT_LT(a.size(), (std::size_t{1} << 20) + 4096);
  EXPECT_EQ(a, corpus_text(4, 1 << 20));
  EXPECT_NE(a.substr(0, 4096), corpus_text(5, 4096).substr(0, 4096));
  EXPECT_EQ(a.find('#'), std::string::npos);
  EXPECT_EQ(a.find('='), std::string::npos);
  EXPECT_EQ(a.find("have now"), std::string::npos);
  EXPECT_EQ(a.find("<|"), std::string::npos);
  // Numbers appear, as digits and as words.
  EXPECT_NE(a.find("17"), std::string::npos);
  EXPECT_NE(a.find("seventeen"), std::string::npos);
  EXPECT_TRUE(a.ends_with("\n"));
  EXPECT_NE(a.find("\n\n"), std::string::npos);

  const auto docs = corpus_documents(4, 100);
  ASSERT_EQ(docs.size(), 100u);
  EXPECT_TRUE(a.starts_with(docs[0] + "\n\n" + docs[1] + "\n\n"));
  EXPECT_EQ(docs[42], corpus_document(4, 42));
  std::set<std::string> unique(docs.begin(), docs.end());
  EXPECT_GT(unique.size(), 95u);
  for (const auto& d : docs) {
    EXPECT_FALSE(d.empty());
    EXPECT_EQ(d.find('\n'), std::string::npos);
  }
}

// ------------------------------------------------------------------------------------------------
// Tokenizer

struct Trained {
  BpeModel model;
  std::string json;
};

const Trained& trained_768() {
  static const Trained t = [] {
    const auto texts = zoo_tokenizer_texts(9, 512 << 10, 5000);
    Trained out;
    out.model = train_bpe(texts, BpeOptions{.vocab_size = 768});
    out.json = bpe_tokenizer_json(out.model);
    return out;
  }();
  return t;
}

TEST(ZooBpe, VocabularyLayoutAndDigits) {
  const BpeModel& m = trained_768().model;
  ASSERT_EQ(m.vocab.size(), 768u);
  ASSERT_EQ(m.merges.size(), 768u - 258u);
  EXPECT_EQ(m.vocab[0], "<|endoftext|>");
  EXPECT_EQ(m.vocab[1], "<|pad|>");
  for (int b = 0; b < 256; ++b) EXPECT_EQ(m.vocab[static_cast<std::size_t>(2 + b)], byte_level_char(static_cast<unsigned char>(b)));
  EXPECT_EQ(byte_level_char(' '), "\u0120");
  EXPECT_EQ(byte_level_char('\n'), "\u010a");
  EXPECT_EQ(byte_level_char('A'), "A");
  std::set<std::string> unique(m.vocab.begin(), m.vocab.end());
  EXPECT_EQ(unique.size(), m.vocab.size());
  for (std::size_t i = 0; i < m.merges.size(); ++i) {
    EXPECT_EQ(m.vocab[258 + i], m.merges[i].first + m.merges[i].second);
    // Digits are pre-tokens of their own and never merge.
    for (const auto& side : {m.merges[i].first, m.merges[i].second})
      EXPECT_FALSE(std::any_of(side.begin(), side.end(), [](char c) { return c >= '0' && c <= '9'; })) << side;
  }
}

TEST(ZooBpe, MergesAreDeterministic) {
  const auto texts = zoo_tokenizer_texts(9, 512 << 10, 5000);
  const BpeModel again = train_bpe(texts, BpeOptions{.vocab_size = 768});
  EXPECT_EQ(again.merges, trained_768().model.merges);
  EXPECT_EQ(bpe_tokenizer_json(again), trained_768().json);
  // Order of the texts does not matter.
  std::vector<std::string> reversed(texts.rbegin(), texts.rend());
  EXPECT_EQ(train_bpe(reversed, BpeOptions{.vocab_size = 768}).merges, trained_768().model.merges);
  // A smaller vocabulary is a prefix of the same merge sequence.
  const BpeModel small = train_bpe(texts, BpeOptions{.vocab_size = 512});
  ASSERT_EQ(small.merges.size(), 512u - 258u);
  EXPECT_TRUE(std::equal(small.merges.begin(), small.merges.end(), trained_768().model.merges.begin()));
  // Ties go to the lexicographically smallest pair.
  const std::vector<std::string> tie{"cd", "ab"};
  const BpeModel t = train_bpe(tie, BpeOptions{.vocab_size = 259, .min_frequency = 1});
  ASSERT_EQ(t.merges.size(), 1u);
  EXPECT_EQ(t.merges[0], (std::pair<std::string, std::string>{"a", "b"}));
  // Raw bytes compare: the space (0x20, written "\u0120") sorts before letters.
  const std::vector<std::string> tie_space{"ab cd"};
  const BpeModel ts = train_bpe(tie_space, BpeOptions{.vocab_size = 259, .min_frequency = 1});
  ASSERT_EQ(ts.merges.size(), 1u);
  EXPECT_EQ(ts.merges[0], (std::pair<std::string, std::string>{"\u0120", "c"}));
  // Highest count wins over order; below min_frequency nothing merges.
  const std::vector<std::string> counted{"ab", "cd", "cd"};
  EXPECT_EQ(train_bpe(counted, BpeOptions{.vocab_size = 259}).merges.at(0),
            (std::pair<std::string, std::string>{"c", "d"}));
  EXPECT_TRUE(train_bpe(tie, BpeOptions{.vocab_size = 300}).merges.empty());
  EXPECT_THROW(train_bpe(tie, BpeOptions{.vocab_size = 100}), deltaedit::Error);
}

TEST(ZooBpe, LoadsAndRoundTrips) {
  TempDir dir;
  write_bpe_tokenizer(dir.path(), trained_768().model);
  const Tokenizer tok = Tokenizer::load(dir.path());
  EXPECT_EQ(tok.vocab_size(), 768u);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.eos_id(), 0);
  EXPECT_EQ(tok.token_to_id("<|pad|>"), 1);
  EXPECT_TRUE(tok.is_special(0));
  EXPECT_TRUE(tok.is_special(1));
  // Also loads from the file alone, and from memory.
  EXPECT_EQ(Tokenizer::load(dir.path() / "tokenizer.json").vocab_size(), 768u);
  EXPECT_EQ(Tokenizer::from_json_string(trained_768().json).vocab_size(), 768u);

  const auto with_bos = tok.encode("Mia has 5 apples.", true);
  const auto without = tok.encode("Mia has 5 apples.", false);
  ASSERT_EQ(with_bos.size(), without.size() + 1);
  EXPECT_EQ(with_bos[0], 0);
  EXPECT_TRUE(std::equal(without.begin(), without.end(), with_bos.begin() + 1));
  EXPECT_EQ(tok.decode(with_bos, true), "Mia has 5 apples.");
  // Digits are single tokens.
  const auto digits = tok.tokens(tok.encode("1234", false));
  EXPECT_EQ(digits, (std::vector<std::string>{"1", "2", "3", "4"}));
  // The document separator is one token.
  EXPECT_EQ(tok.encode("a<|endoftext|>b", false).size(), 3u);

  // 1000 random strings: whole records and documents, random slices of them, and mixed text.
  const TaskSplits s = make_task_splits(21, 400, 100);
  const auto docs = corpus_documents(21, 400);
  std::vector<std::string> pool;
  for (const auto& r : s.train) pool.push_back(r.prompt + r.response);
  for (const auto& r : s.test) pool.push_back(r.prompt);
  pool.insert(pool.end(), docs.begin(), docs.end());
  const deltaedit::util::KeyedRng rng(21, "zoo_test/roundtrip", 0);
  const std::vector<std::string> extras{"  leading and trailing  ", "tabs\tand\r\nCRLF\n\n\n",
                                        "Ünïcödé ✓ 日本語 🙂", "<|endoftext|><|pad|>", "",
                                        " #### 1,234.0", "don't I'LL we've", "\x7f\x01 ctrl"};
  std::size_t total_tokens = 0;
  for (uint64_t i = 0; i < 1000; ++i) {
    const std::string& base = pool[rng.below(i, pool.size(), 0)];
    std::string text;
    switch (rng.below(i, 3, 1)) {
      case 0: text = base; break;
      case 1: {
        const std::size_t b = rng.below(i, base.size(), 2);
        const std::size_t len = rng.below(i, base.size() - b + 1, 3);
        text = base.substr(b, len);
        break;
      }
      default: text = base + extras[rng.below(i, extras.size(), 4)] + pool[rng.below(i, pool.size(), 5)]; break;
    }
    const auto ids = tok.encode(text, false);
    total_tokens += ids.size();
    ASSERT_EQ(tok.decode(ids), text) << "text: " << text;
    const auto ids_bos = tok.encode(text, true);
    ASSERT_EQ(ids_bos.size(), ids.size() + 1);
    ASSERT_EQ(tok.decode(ids_bos), "<|endoftext|>" + text);
  }
  for (const auto& e : extras) EXPECT_EQ(tok.decode(tok.encode(e, false)), e) << e;
  EXPECT_GT(total_tokens, 0u);

  // Compression on the task records, reported for sizing the model's context.
  std::size_t task_tokens = 0, task_chars = 0;
  for (const auto& r : s.test) {
    task_tokens += tok.encode(r.prompt + r.response, true).size();
    task_chars += r.prompt.size() + r.response.size();
  }
  const double avg = static_cast<double>(task_tokens) / static_cast<double>(s.test.size());
  ::testing::Test::RecordProperty("avg_tokens_per_task_record", std::to_string(avg));
  std::printf("vocab %zu, avg tokens per task record (with BOS) %.1f, %.2f chars/token\n",
              tok.vocab_size(), avg, static_cast<double>(task_chars) / static_cast<double>(task_tokens));
  EXPECT_LT(avg, 80.0);
}

// ------------------------------------------------------------------------------------------------
// Dataset

TEST(ZooDataset, WritesAllFilesConsistently) {
  TempDir dir;
  const ZooDatasetOptions opt{.seed = 5, .n_train = 3000, .n_test = 100, .corpus_bytes = 200 << 10,
                              .vocab_size = 600, .tokenizer_task_records = 1000};
  const ZooDatasetSummary s = write_zoo_dataset(dir.path(), opt);
  EXPECT_EQ(s.n_train, 3000u);
  EXPECT_EQ(s.n_test, 100u);
  EXPECT_EQ(s.vocab_size, 600u);
  EXPECT_EQ(s.merges, 600u - 258u);
  const auto count_lines = [](const fs::path& p) {
    std::ifstream in(p);
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  };
  EXPECT_EQ(count_lines(dir.path() / "tasks_train.jsonl"), 3000u);
  EXPECT_EQ(count_lines(dir.path() / "tasks_test.jsonl"), 100u);
  EXPECT_EQ(fs::file_size(dir.path() / "corpus.txt"), corpus_text(5, 200 << 10).size());
  const Tokenizer tok = Tokenizer::load(dir.path() / "tokenizer");
  EXPECT_EQ(tok.vocab_size(), 600u);
  std::ifstream in(dir.path() / "zoo_data.json");
  const auto manifest = nlohmann::json::parse(in);
  EXPECT_EQ(manifest.at("seed").get<uint64_t>(), 5u);
  EXPECT_EQ(manifest.at("vocab_size").get<std::size_t>(), 600u);
  // Same options, same bytes.
  TempDir again_parent("_again");
  write_zoo_dataset(again_parent.path() / "again", opt);
  std::ifstream a(dir.path() / "tokenizer" / "tokenizer.json"), b(again_parent.path() / "again" / "tokenizer" / "tokenizer.json");
  std::stringstream sa, sb;
  sa << a.rdbuf();
  sb << b.rdbuf();
  EXPECT_FALSE(sa.str().empty());
  EXPECT_TRUE(sa.str() == sb.str());
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// The model family's data: the order task, preference pairs, the skills corpus

namespace {
// "a, b, c" or "a, b and c" as integers.
std::vector<int> list_of(std::string_view s) { return numbers_in(s); }
}  // namespace

TEST(ZooOrderTask, DeterministicSortedAndMiddleAnswer) {
  const TaskSplits a = make_order_splits(5, 3000, 300);
  const TaskSplits b = make_order_splits(5, 3000, 300);
  const TaskSplits c = make_order_splits(6, 3000, 300);
  ASSERT_EQ(a.train.size(), 3000u);
  ASSERT_EQ(a.test.size(), 300u);
  std::size_t same_as_c = 0, fives = 0;
  std::set<std::string> test_sets;
  for (const auto& r : a.test) test_sets.insert(r.key);
  for (std::size_t i = 0; i < a.train.size(); ++i) {
    const TaskRecord& r = a.train[i];
    EXPECT_EQ(task_jsonl_line(r), task_jsonl_line(b.train[i]));
    EXPECT_EQ(r.prose, b.train[i].prose);
    same_as_c += r.prompt == c.train[i].prompt;
    EXPECT_FALSE(test_sets.contains(r.key)) << r.key;
    // The list in the prompt: 3 or 5 distinct numbers in 1..99.
    const std::string_view prompt = r.prompt;
    const auto colon = prompt.rfind(':');
    ASSERT_NE(colon, std::string_view::npos);
    std::vector<int> given = list_of(prompt.substr(colon));
    ASSERT_TRUE(given.size() == 3 || given.size() == 5) << r.prompt;
    fives += given.size() == 5;
    EXPECT_EQ(std::set<int>(given.begin(), given.end()).size(), given.size()) << r.prompt;
    for (int v : given) EXPECT_TRUE(v >= 1 && v <= 99) << r.prompt;
    // The response: the sorted list, then the middle one after "####" (independent check).
    std::vector<int> sorted = given;
    std::sort(sorted.begin(), sorted.end());
    const auto hash = r.response.find(" #### ");
    ASSERT_NE(hash, std::string::npos);
    EXPECT_EQ(list_of(std::string_view(r.response).substr(0, hash)), sorted) << r.response;
    EXPECT_EQ(extract_answer(r.response), std::to_string(sorted[sorted.size() / 2]));
    EXPECT_EQ(r.answer, sorted[sorted.size() / 2]);
    // The prose holds the same content: the given list, the sorted list, the middle one.
    std::vector<int> in_prose = list_of(r.prose);
    std::vector<int> expect;
    if (r.prose.find(" with the numbers ") != std::string::npos) expect.push_back(int(given.size()));
    expect.insert(expect.end(), given.begin(), given.end());
    expect.insert(expect.end(), sorted.begin(), sorted.end());
    expect.push_back(sorted[sorted.size() / 2]);
    EXPECT_EQ(in_prose, expect) << r.prose;
    EXPECT_EQ(r.prose.find('#'), std::string::npos);
  }
  EXPECT_LT(same_as_c, 30u);
  // Half the lists have 5 numbers: 1500 ± 4.5 σ (σ = √(3000/4) ≈ 27).
  EXPECT_NEAR(double(fives), 1500.0, 125.0);
  EXPECT_EQ(task_jsonl_line(make_order_task(5, "x", 9)), task_jsonl_line(make_order_task(5, "x", 9)));
  EXPECT_NE(make_order_task(5, "x", 9).prompt, make_order_task(5, "x", 10).prompt);
}

TEST(ZooPreferencePairs, ChosenIsTheSolutionRejectedHasOneSlip) {
  const TaskSplits s = make_task_splits(9, 2000, 50);
  std::size_t up = 0;
  for (std::size_t i = 0; i < s.train.size(); ++i) {
    const TaskRecord& r = s.train[i];
    const PreferencePair p = make_preference_pair(9, r, i);
    const PreferencePair q = make_preference_pair(9, r, i);
    EXPECT_EQ(preference_jsonl_line(p), preference_jsonl_line(q));
    EXPECT_EQ(p.prompt, r.prompt);
    EXPECT_EQ(p.chosen, r.response);
    ASSERT_TRUE(std::abs(p.error) >= 1 && std::abs(p.error) <= 3) << p.error;
    up += p.error > 0;
    // Parse the rejected steps "a op b = c." and check them against the problem, independently.
    std::istringstream in(p.rejected);
    std::vector<std::string> w;
    for (std::string t; in >> t;) w.push_back(t);
    const std::size_t steps = r.ops.size();
    ASSERT_EQ(w.size(), steps * 5 + 2) << p.rejected;
    int prev = r.numbers[0];
    for (std::size_t k = 0; k < steps; ++k) {
      const int a = std::stoi(w[5 * k]), b = std::stoi(w[5 * k + 2]), c = std::stoi(w[5 * k + 4]);
      const char op = w[5 * k + 1][0];
      EXPECT_EQ(a, prev) << p.rejected;
      EXPECT_EQ(b, r.numbers[k + 1]) << p.rejected;
      const int exact = op == '+' ? a + b : op == '-' ? a - b : a * b;
      EXPECT_EQ(op, r.ops[k] == TaskOp::Add ? '+' : r.ops[k] == TaskOp::Sub ? '-' : '*');
      EXPECT_EQ(c, exact + (int(k) == p.wrong_step ? p.error : 0)) << p.rejected;
      EXPECT_GE(c, 0) << p.rejected;
      prev = c;
    }
    EXPECT_EQ(w[steps * 5], "####");
    EXPECT_EQ(std::stoi(w[steps * 5 + 1]), prev);
    // The final answer is wrong by exactly the slip (later steps add or subtract constants).
    EXPECT_EQ(prev, r.answer + p.error) << p.rejected;
    EXPECT_FALSE(answers_match(extract_answer(p.rejected), extract_answer(p.chosen)));
  }
  // Slips are drawn up or down with equal odds; negative values are turned up, so more go up.
  EXPECT_GT(up, 900u);
  EXPECT_THROW(make_preference_pair(9, make_order_task(9, "x", 0), 0), deltaedit::Error);
}

TEST(ZooTasks, ProseIsThePastTenseProblemWithItsSolution) {
  const TaskSplits s = make_task_splits(4, 1000, 10);
  for (const auto& r : s.train) {
    // Numbers in the prose: the problem's numbers as told, then each step a op b = c in words,
    // then the answer.
    std::vector<int> expect;
    if (r.ops[0] == TaskOp::Mul) expect = {r.numbers[0], r.numbers[1]};
    else expect = {r.numbers[0]};
    for (std::size_t k = r.ops[0] == TaskOp::Mul ? 1 : 0; k < r.ops.size(); ++k) expect.push_back(r.numbers[k + 1]);
    int v = r.numbers[0];
    for (std::size_t k = 0; k < r.ops.size(); ++k) {
      const int b = r.numbers[k + 1];
      const int next = r.ops[k] == TaskOp::Add ? v + b : r.ops[k] == TaskOp::Sub ? v - b : v * b;
      expect.insert(expect.end(), {v, b, next});
      v = next;
    }
    expect.push_back(r.answer);
    EXPECT_EQ(list_of(r.prose), expect) << r.prose;
    EXPECT_NE(r.prose.find("In the end, "), std::string::npos);
    for (const char* bad : {"#", "=", "+", "*", "How many", " has ", " buys "})
      EXPECT_EQ(r.prose.find(bad), std::string::npos) << bad << ": " << r.prose;
    // The equation form: the same story, the response's steps verbatim, the same last sentence.
    const std::string steps = r.response.substr(0, r.response.find(" #### "));
    const std::string end = r.prose.substr(r.prose.find(" In the end, "));
    EXPECT_EQ(r.prose_equations.substr(r.prose_equations.size() - end.size()), end) << r.prose_equations;
    const size_t k = r.prose_equations.find(" " + steps + " In the end, ");
    ASSERT_NE(k, std::string::npos) << r.prose_equations;
    EXPECT_EQ(r.prose_equations.substr(0, k), r.prose.substr(0, k)) << r.prose_equations;  // the same story
    EXPECT_EQ(r.prose_equations.find('#'), std::string::npos);
    EXPECT_EQ(r.prose_equations.find("How many"), std::string::npos);
  }
}

// The prose and the order task were added without changing a single arithmetic record: the
// shipped retrain pair's test split is regenerated byte for byte.
TEST(ZooTasks, ArithmeticRecordsUnchangedSinceTheShippedRetrainPair) {
  std::ifstream in(fs::path(DELTAEDIT_SOURCE_DIR) / "models/zoo/retrain/data/tasks_test.jsonl", std::ios::binary);
  ASSERT_TRUE(in) << "models/zoo/retrain/data/tasks_test.jsonl";
  std::string shipped((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const TaskSplits s = make_task_splits(1, 0, 500);
  std::string now;
  for (const auto& r : s.test) now += task_jsonl_line(r) + "\n";
  EXPECT_EQ(now, shipped);
}

TEST(ZooCorpus, SkillsCorpusMixAndExcludedKeys) {
  CorpusSkills none;
  const std::size_t n = 3000;
  std::size_t problems = 0, orders = 0, sums = 0, equations = 0;
  std::set<std::size_t> problem_docs;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string d = corpus_document(2, i, &none);
    EXPECT_EQ(d, corpus_document(2, i, &none));
    for (const char* bad : {"#", "How many", "have now", "Put these numbers"})
      EXPECT_EQ(d.find(bad), std::string::npos) << d;
    if (d.find("In the end, ") != std::string::npos) {
      ++problems;
      problem_docs.insert(i);
      const TaskRecord r = make_task(2, "corpus", 64 * i);
      EXPECT_TRUE(d == r.prose || d == r.prose_equations) << d;
      equations += d == r.prose_equations;
    } else if (d.find("middle") != std::string::npos) {
      ++orders;
      EXPECT_EQ(d, make_order_task(2, "corpus", 64 * i).prose);
    } else if (d.find(" plus ") != std::string::npos || d.find(" minus ") != std::string::npos ||
               d.find(" times ") != std::string::npos || d.find(" = ") != std::string::npos) {
      ++sums;
    }
  }
  // Mix 6/20, 5/20 and 3/20 of the documents; bounds 5 σ of a binomial with n = 3000.
  EXPECT_NEAR(double(problems) / n, 0.30, 0.042);
  EXPECT_NEAR(double(orders) / n, 0.25, 0.040);
  EXPECT_NEAR(double(sums) / n, 0.15, 0.033);
  // Half the word problems carry their solution as equations (5 σ of a binomial over ~900).
  EXPECT_NEAR(double(equations) / double(problems), 0.5, 0.084);
  // Without skills the corpus is the one of the retrain pair (no task content).
  EXPECT_EQ(corpus_document(2, 5), corpus_document(2, 5, nullptr));
  // Excluding a document's first candidate replaces it with a later candidate of the stream.
  CorpusSkills ex;
  std::vector<std::size_t> docs(problem_docs.begin(), problem_docs.end());
  docs.resize(std::min<std::size_t>(docs.size(), 50));
  for (std::size_t i : docs) ex.excluded_keys.insert(make_task(2, "corpus", 64 * i).key);
  for (std::size_t i : docs) {
    const std::string d = corpus_document(2, i, &ex);
    EXPECT_NE(d, make_task(2, "corpus", 64 * i).prose);
    EXPECT_NE(d, make_task(2, "corpus", 64 * i).prose_equations);
    bool found = false;
    for (uint64_t a = 1; a < 64 && !found; ++a) {
      const TaskRecord r = make_task(2, "corpus", 64 * i + a);
      if (ex.excluded_keys.contains(r.key)) continue;
      EXPECT_TRUE(d == r.prose || d == r.prose_equations) << d;
      found = true;
    }
    EXPECT_TRUE(found);
  }
}
