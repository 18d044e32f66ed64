#include "zoo/bpe.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "text/tokenizer_detail.h"
#include "zoo/corpus.h"
#include "zoo/tasks.h"
#include "io/writer.h"
#include "util/error.h"

namespace deltaedit::zoo {
namespace {

using ojson = nlohmann::ordered_json;

constexpr std::size_t kNumSpecial = 2;
constexpr std::size_t kNumBytes = 256;

// Code point of byte b in GPT-2's byte-to-unicode table: printable Latin-1 bytes map to
// themselves, the other 68 bytes to U+0100 onwards in byte order.
char32_t byte_level_cp(unsigned char b) {
  const auto printable = [](unsigned x) {
    return (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
  };
  if (printable(b)) return b;
  char32_t n = 0;
  for (unsigned x = 0; x < b; ++x)
    if (!printable(x)) ++n;
  return 256 + n;
}

std::string to_byte_level(std::string_view raw) {
  std::string out;
  for (unsigned char b : raw) out += byte_level_char(b);
  return out;
}

void write_file(const std::filesystem::path& path, const std::string& text) { io::replace_file(path, text); }

ojson added_token(std::size_t id, std::string_view content) {
  ojson t;
  t["id"] = id;
  t["content"] = content;
  t["single_word"] = false;
  t["lstrip"] = false;
  t["rstrip"] = false;
  t["normalized"] = false;
  t["special"] = true;
  return t;
}

ojson special_item(std::string_view token) {
  ojson inner;
  inner["id"] = token;
  inner["type_id"] = 0;
  ojson item;
  item["SpecialToken"] = inner;
  return item;
}

ojson sequence_item(std::string_view id) {
  ojson inner;
  inner["id"] = id;
  inner["type_id"] = 0;
  ojson item;
  item["Sequence"] = inner;
  return item;
}

// Calls emit for each pre-token: the matches of `re` and the gaps between them (Isolated).
template <class Emit>
void pretokenize_with(const text::detail::Regex& re, std::string_view text, Emit&& emit) {
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  re.find_all(text, spans);
  std::size_t pos = 0;
  for (const auto& [b, e] : spans) {
    if (b > pos) emit(text.substr(pos, b - pos));
    emit(text.substr(b, e - b));
    pos = e;
  }
  if (pos < text.size()) emit(text.substr(pos));
}

}  // namespace

std::string byte_level_char(unsigned char b) {
  std::string s;
  text::detail::utf8_append(s, byte_level_cp(b));
  return s;
}

std::vector<std::string> zoo_pretokenize(std::string_view text) {
  const text::detail::Regex re(kZooSplitPattern, "zoo split pattern");
  std::vector<std::string> pieces;
  pretokenize_with(re, text, [&](std::string_view piece) { pieces.emplace_back(piece); });
  return pieces;
}

BpeModel train_bpe(std::span<const std::string> texts, const BpeOptions& options) {
  if (options.vocab_size < kNumSpecial + kNumBytes)
    throw Error(ErrorKind::Usage, "train_bpe: vocab_size must be at least " +
                                      std::to_string(kNumSpecial + kNumBytes));

  // Unique pre-tokens with their counts, in byte order (the order only fixes the work layout;
  // the result does not depend on it).
  const text::detail::Regex re(kZooSplitPattern, "zoo split pattern");
  std::map<std::string, uint64_t, std::less<>> word_counts;
  for (const auto& t : texts) {
    if (text::detail::utf8_invalid_offset(t) != std::string::npos)
      throw Error(ErrorKind::Usage, "train_bpe: training text is not valid UTF-8");
    pretokenize_with(re, t, [&](std::string_view piece) {
      auto it = word_counts.find(piece);
      if (it == word_counts.end()) it = word_counts.emplace(std::string(piece), 0).first;
      ++it->second;
    });
  }

  // Symbols: 0..255 are the bytes, 256.. the merged tokens; raw bytes of each.
  std::vector<std::string> symbol_bytes;
  symbol_bytes.reserve(options.vocab_size);
  for (std::size_t b = 0; b < kNumBytes; ++b) symbol_bytes.emplace_back(1, static_cast<char>(b));

  std::vector<std::vector<uint32_t>> words;
  std::vector<uint64_t> counts;
  words.reserve(word_counts.size());
  for (const auto& [w, c] : word_counts) {
    std::vector<uint32_t> syms;
    syms.reserve(w.size());
    for (unsigned char b : w) syms.push_back(b);
    words.push_back(std::move(syms));
    counts.push_back(c);
  }

  BpeModel model;
  const std::size_t target_merges = options.vocab_size - kNumSpecial - kNumBytes;
  std::unordered_map<uint64_t, uint64_t> pair_counts;
  const auto pair_key = [](uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; };
  std::vector<std::pair<uint32_t, uint32_t>> merges;
  while (merges.size() < target_merges) {
    pair_counts.clear();
    for (std::size_t w = 0; w < words.size(); ++w) {
      const auto& syms = words[w];
      for (std::size_t i = 0; i + 1 < syms.size(); ++i) pair_counts[pair_key(syms[i], syms[i + 1])] += counts[w];
    }
    // Most frequent pair; ties to the smallest (left bytes, right bytes).
    bool found = false;
    uint64_t best_key = 0, best_count = 0;
    for (const auto& [key, count] : pair_counts) {
      if (count < options.min_frequency) continue;
      bool better = !found || count > best_count;
      if (found && count == best_count) {
        const auto& l = symbol_bytes[key >> 32];
        const auto& r = symbol_bytes[key & 0xFFFFFFFFu];
        const auto& bl = symbol_bytes[best_key >> 32];
        const auto& br = symbol_bytes[best_key & 0xFFFFFFFFu];
        better = l < bl || (l == bl && r < br);
      }
      if (better) {
        found = true;
        best_key = key;
        best_count = count;
      }
    }
    if (!found) break;
    const auto left = static_cast<uint32_t>(best_key >> 32);
    const auto right = static_cast<uint32_t>(best_key & 0xFFFFFFFFu);
    const auto merged = static_cast<uint32_t>(symbol_bytes.size());
    symbol_bytes.push_back(symbol_bytes[left] + symbol_bytes[right]);
    merges.emplace_back(left, right);
    for (auto& syms : words) {
      std::size_t out = 0;
      for (std::size_t i = 0; i < syms.size(); ++i) {
        if (i + 1 < syms.size() && syms[i] == left && syms[i + 1] == right) {
          syms[out++] = merged;
          ++i;
        } else {
          syms[out++] = syms[i];
        }
      }
      syms.resize(out);
    }
  }

  model.vocab.reserve(kNumSpecial + symbol_bytes.size());
  model.vocab.emplace_back(kEndOfText);
  model.vocab.emplace_back(kPad);
  for (const auto& s : symbol_bytes) model.vocab.push_back(to_byte_level(s));
  model.merges.reserve(merges.size());
  for (const auto& [l, r] : merges)
    model.merges.emplace_back(to_byte_level(symbol_bytes[l]), to_byte_level(symbol_bytes[r]));
  return model;
}

std::string bpe_tokenizer_json(const BpeModel& model) {
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = ojson::array({added_token(0, kEndOfText), added_token(1, kPad)});
  j["normalizer"] = nullptr;

  ojson split;
  split["type"] = "Split";
  split["pattern"] = ojson{{"Regex", kZooSplitPattern}};
  split["behavior"] = "Isolated";
  split["invert"] = false;
  ojson byte_level_pre;
  byte_level_pre["type"] = "ByteLevel";
  byte_level_pre["add_prefix_space"] = false;
  byte_level_pre["trim_offsets"] = true;
  byte_level_pre["use_regex"] = false;
  ojson pre;
  pre["type"] = "Sequence";
  pre["pretokenizers"] = ojson::array({split, byte_level_pre});
  j["pre_tokenizer"] = pre;

  ojson post;
  post["type"] = "TemplateProcessing";
  post["single"] = ojson::array({special_item(kEndOfText), sequence_item("A")});
  post["pair"] = ojson::array(
      {special_item(kEndOfText), sequence_item("A"), special_item(kEndOfText), sequence_item("B")});
  ojson special;
  special["id"] = kEndOfText;
  special["ids"] = ojson::array({0});
  special["tokens"] = ojson::array({kEndOfText});
  post["special_tokens"] = ojson{{std::string(kEndOfText), special}};
  j["post_processor"] = post;

  ojson decoder;
  decoder["type"] = "ByteLevel";
  decoder["add_prefix_space"] = true;
  decoder["trim_offsets"] = true;
  decoder["use_regex"] = true;
  j["decoder"] = decoder;

  ojson m;
  m["type"] = "BPE";
  m["dropout"] = nullptr;
  m["unk_token"] = nullptr;
  m["continuing_subword_prefix"] = nullptr;
  m["end_of_word_suffix"] = nullptr;
  m["fuse_unk"] = false;
  m["byte_fallback"] = false;
  m["ignore_merges"] = false;
  ojson vocab = ojson::object();
  for (std::size_t id = 0; id < model.vocab.size(); ++id) vocab[model.vocab[id]] = id;
  m["vocab"] = vocab;
  ojson merges = ojson::array();
  for (const auto& [l, r] : model.merges) merges.push_back(ojson::array({l, r}));
  m["merges"] = merges;
  j["model"] = m;
  return j.dump(2) + "\n";
}

std::string bpe_tokenizer_config_json() {
  ojson c;
  c["add_bos_token"] = true;
  c["add_eos_token"] = false;
  c["bos_token"] = kEndOfText;
  c["eos_token"] = kEndOfText;
  c["pad_token"] = kPad;
  c["unk_token"] = nullptr;
  c["clean_up_tokenization_spaces"] = false;
  c["model_max_length"] = 1024;
  c["tokenizer_class"] = "PreTrainedTokenizerFast";
  return c.dump(2) + "\n";
}

void write_bpe_tokenizer(const std::filesystem::path& dir, const BpeModel& model) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(ErrorKind::Io, "cannot create directory: " + ec.message(), dir.string());
  write_file(dir / "tokenizer.json", bpe_tokenizer_json(model));
  write_file(dir / "tokenizer_config.json", bpe_tokenizer_config_json());
}

std::vector<std::string> zoo_tokenizer_texts(uint64_t seed, std::size_t corpus_bytes,
                                             std::size_t n_task_records, std::size_t n_test) {
  std::vector<std::string> texts;
  texts.push_back(corpus_text(seed, corpus_bytes));
  const TaskSplits splits = make_task_splits(seed, n_task_records, n_test);
  for (const auto& r : splits.train) texts.push_back(r.prompt + r.response);
  return texts;
}

}  // namespace deltaedit::zoo
