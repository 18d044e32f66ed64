#include "text/tokenizer.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "text/tokenizer_detail.h"
#include "util/error.h"

namespace deltaedit::text {

using detail::Regex;
using nlohmann::json;

namespace {

// ---------------------------------------------------------------------------------------------
// Shared helpers

constexpr int64_t kMaxId = INT32_MAX / 2;

[[noreturn]] void fail(ErrorKind kind, const std::string& file, const std::string& msg) {
  throw Error(kind, msg, file);
}

std::string type_of(const json& j, const std::string& file, const std::string& where) {
  if (!j.is_object()) fail(ErrorKind::Format, file, where + " must be a JSON object");
  auto it = j.find("type");
  if (it == j.end() || !it->is_string())
    fail(ErrorKind::Format, file, where + " has no string field 'type'");
  return it->get<std::string>();
}

std::string unsupported_msg(const std::string& where, const std::string& type,
                            const char* supported) {
  return where + " type '" + type + "' is not supported (supported: " + supported + ")";
}

// An integer field in [lo, hi]; floats, strings and out-of-range values are rejected.
int64_t get_int(const json& v, const std::string& file, const std::string& what, int64_t lo,
                int64_t hi) {
  const bool is_int = v.is_number_integer();  // signed or unsigned
  const bool in_range =
      is_int && (v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi)
                                        : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi);
  if (!in_range)
    fail(ErrorKind::Format, file,
         what + " " + v.dump() + " is not an integer in [" + std::to_string(lo) + ", " +
             std::to_string(hi) + "]");
  return v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>()) : v.get<int64_t>();
}

bool get_bool(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return it->get<bool>();
}

// Byte <-> character mapping of byte-level BPE: printable bytes map to themselves, the others to
// U+0100 onwards in byte order.
struct ByteMap {
  std::array<std::string, 256> byte_to_str;
  std::array<int16_t, 512> char_to_byte;  // code point -> byte, -1 when not a byte character
  ByteMap() {
    char_to_byte.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      detail::utf8_append(byte_to_str[static_cast<std::size_t>(b)], cp);
      char_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

// A pattern that is either a literal string or a regex (the {"String": ...} / {"Regex": ...}
// objects of tokenizer.json).
class Pattern {
 public:
  Pattern(const json& j, const std::string& file, const std::string& where) {
    if (j.is_object() && j.contains("String")) {
      literal_ = j.at("String").get<std::string>();
    } else if (j.is_object() && j.contains("Regex")) {
      regex_ = std::make_unique<Regex>(j.at("Regex").get<std::string>(), file + ": " + where);
    } else {
      fail(ErrorKind::Format, file,
           where + " pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  void find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) const {
    if (regex_) return regex_->find_all(s, out);
    if (literal_.empty()) return;
    for (std::size_t p = s.find(literal_); p != std::string_view::npos;
         p = s.find(literal_, p + literal_.size()))
      out.emplace_back(p, p + literal_.size());
  }
  std::string replace_all(std::string_view s, std::string_view content) const {
    std::vector<std::pair<std::size_t, std::size_t>> m;
    find_all(s, m);
    if (m.empty()) return std::string(s);
    std::string r;
    r.reserve(s.size());
    std::size_t prev = 0;
    for (auto [b, e] : m) {
      r.append(s.substr(prev, b - prev));
      r.append(content);
      prev = e;
    }
    r.append(s.substr(prev));
    return r;
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

// ---------------------------------------------------------------------------------------------
// Normalizers

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};

struct SequenceNormalizer : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> items;
  void apply(std::string& s) const override {
    for (const auto& n : items) n->apply(s);
  }
};

struct PrependNormalizer : Normalizer {
  std::string prepend;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend);
  }
};

struct ReplaceNormalizer : Normalizer {
  std::unique_ptr<Pattern> pattern;
  std::string content;
  void apply(std::string& s) const override { s = pattern->replace_all(s, content); }
};

struct NfcNormalizer : Normalizer {
  void apply(std::string& s) const override { s = detail::nfc(s); }
};

struct StripNormalizer : Normalizer {
  bool left = true, right = true;
  void apply(std::string& s) const override {
    std::size_t b = 0, e = s.size();
    if (left) {
      while (b < e) {
        std::size_t i = b;
        if (!detail::is_unicode_whitespace(detail::utf8_next(s, i))) break;
        b = i;
      }
    }
    if (right) {
      while (e > b) {
        std::size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        std::size_t i = start;
        if (!detail::is_unicode_whitespace(detail::utf8_next(s, i))) break;
        e = start;
      }
    }
    s = s.substr(b, e - b);
  }
};

constexpr int kMaxNesting = 32;  // Sequence-in-Sequence depth accepted by the factories

void check_depth(int depth, const std::string& file, const char* what) {
  if (depth > kMaxNesting)
    fail(ErrorKind::Format, file,
         std::string(what) + " Sequence nesting is deeper than " + std::to_string(kMaxNesting));
}

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& file, int depth = 0) {
  check_depth(depth, file, "normalizer");
  const std::string type = type_of(j, file, "normalizer");
  if (type == "Sequence") {
    auto n = std::make_unique<SequenceNormalizer>();
    for (const auto& item : j.at("normalizers"))
      n->items.push_back(make_normalizer(item, file, depth + 1));
    return n;
  }
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prepend = j.at("prepend").get<std::string>();
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->pattern = std::make_unique<Pattern>(j.at("pattern"), file, "Replace normalizer");
    n->content = j.at("content").get<std::string>();
    return n;
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = get_bool(j, "strip_left", true);
    n->right = get_bool(j, "strip_right", true);
    return n;
  }
  fail(ErrorKind::Unsupported, file,
       unsupported_msg("normalizer", type, "Sequence, Prepend, Replace, NFC, Strip"));
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers

struct Piece {
  std::string text;
  bool at_start;  // begins at offset 0 of the input text
};
using Pieces = std::vector<Piece>;
using Ranges = std::vector<std::pair<std::size_t, std::size_t>>;

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Splits `p` at the matched ranges according to `behavior` and appends the non-empty parts.
void split_piece(const Piece& p, const Ranges& matches, SplitBehavior behavior, bool invert,
                 Pieces& out) {
  // Alternating (range, is_delimiter) list covering the whole piece.
  struct Part {
    std::size_t b, e;
    bool delim;
  };
  std::vector<Part> parts;
  std::size_t prev = 0;
  for (auto [b, e] : matches) {
    if (b > prev) parts.push_back({prev, b, invert});
    parts.push_back({b, e, !invert});
    prev = e;
  }
  if (prev < p.text.size()) parts.push_back({prev, p.text.size(), invert});

  std::vector<std::pair<std::size_t, std::size_t>> kept;
  switch (behavior) {
    case SplitBehavior::Removed:
      for (const auto& x : parts)
        if (!x.delim) kept.emplace_back(x.b, x.e);
      break;
    case SplitBehavior::Isolated:
      for (const auto& x : parts) kept.emplace_back(x.b, x.e);
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool prev_delim = false;
      for (const auto& x : parts) {
        if (x.delim && !prev_delim && !kept.empty())
          kept.back().second = x.e;
        else
          kept.emplace_back(x.b, x.e);
        prev_delim = x.delim;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool next_delim = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->delim && !next_delim && !kept.empty())
          kept.back().first = it->b;
        else
          kept.emplace_back(it->b, it->e);
        next_delim = it->delim;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool prev_delim = false;
      for (const auto& x : parts) {
        if (x.delim == prev_delim && !kept.empty())
          kept.back().second = x.e;
        else
          kept.emplace_back(x.b, x.e);
        prev_delim = x.delim;
      }
      break;
    }
  }
  for (auto [b, e] : kept)
    if (e > b) out.push_back({p.text.substr(b, e - b), p.at_start && b == 0});
}

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces& pieces) const = 0;
};

struct SequencePreTokenizer : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> items;
  void apply(Pieces& pieces) const override {
    for (const auto& p : items) p->apply(pieces);
  }
};

struct SplitPreTokenizer : PreTokenizer {
  std::unique_ptr<Pattern> pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void apply(Pieces& pieces) const override {
    Pieces out;
    out.reserve(pieces.size());
    Ranges m;
    for (const auto& p : pieces) {
      m.clear();
      pattern->find_all(p.text, m);
      split_piece(p, m, behavior, invert, out);
    }
    pieces = std::move(out);
  }
};

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteLevelPreTokenizer : PreTokenizer {
  bool add_prefix_space = true;
  std::unique_ptr<Regex> regex;  // null when use_regex is false
  const ByteMap* bytes = nullptr;
  void apply(Pieces& pieces) const override {
    Pieces out;
    out.reserve(pieces.size());
    Ranges m;
    for (auto& p : pieces) {
      if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
      if (regex) {
        m.clear();
        regex->find_all(p.text, m);
        split_piece(p, m, SplitBehavior::Isolated, false, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
    }
    for (auto& p : out) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += bytes->byte_to_str[static_cast<unsigned char>(c)];
      p.text = std::move(mapped);
    }
    pieces = std::move(out);
  }
};

enum class PrependScheme { Always, First, Never };

struct MetaspacePreTokenizer : PreTokenizer {
  std::string replacement = "\xE2\x96\x81";
  PrependScheme scheme = PrependScheme::Always;
  bool split = true;
  void apply(Pieces& pieces) const override {
    Pieces out;
    out.reserve(pieces.size());
    Ranges m;
    for (auto& p : pieces) {
      std::string t;
      t.reserve(p.text.size() + replacement.size());
      for (char c : p.text) {
        if (c == ' ')
          t += replacement;
        else
          t.push_back(c);
      }
      const bool prepend =
          scheme == PrependScheme::Always || (scheme == PrependScheme::First && p.at_start);
      if (prepend && !t.starts_with(replacement)) t.insert(0, replacement);
      p.text = std::move(t);
      if (split) {
        m.clear();
        for (std::size_t i = p.text.find(replacement); i != std::string::npos;
             i = p.text.find(replacement, i + replacement.size()))
          m.emplace_back(i, i + replacement.size());
        split_piece(p, m, SplitBehavior::MergedWithNext, false, out);
      } else if (!p.text.empty()) {
        out.push_back(std::move(p));
      }
    }
    pieces = std::move(out);
  }
};

// Pre-tokenizers defined by one regex and a split behaviour (Digits, Whitespace,
// WhitespaceSplit).
struct RegexPreTokenizer : PreTokenizer {
  std::unique_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void apply(Pieces& pieces) const override {
    Pieces out;
    out.reserve(pieces.size());
    Ranges m;
    for (const auto& p : pieces) {
      m.clear();
      regex->find_all(p.text, m);
      split_piece(p, m, behavior, invert, out);
    }
    pieces = std::move(out);
  }
};

SplitBehavior parse_behavior(const json& j, const std::string& file) {
  const std::string b = j.get<std::string>();
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  fail(ErrorKind::Format, file,
       "Split behavior '" + b +
           "' is unknown (expected Removed, Isolated, MergedWithPrevious, MergedWithNext, "
           "Contiguous)");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& file,
                                                 const ByteMap& bytes, int depth = 0) {
  check_depth(depth, file, "pre_tokenizer");
  const std::string type = type_of(j, file, "pre_tokenizer");
  if (type == "Sequence") {
    auto p = std::make_unique<SequencePreTokenizer>();
    for (const auto& item : j.at("pretokenizers"))
      p->items.push_back(make_pre_tokenizer(item, file, bytes, depth + 1));
    return p;
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPreTokenizer>();
    p->pattern = std::make_unique<Pattern>(j.at("pattern"), file, "Split pre_tokenizer");
    p->behavior = parse_behavior(j.at("behavior"), file);
    p->invert = get_bool(j, "invert", false);
    return p;
  }
  if (type == "ByteLevel") {
    auto p = std::make_unique<ByteLevelPreTokenizer>();
    p->add_prefix_space = get_bool(j, "add_prefix_space", true);
    if (get_bool(j, "use_regex", true))
      p->regex = std::make_unique<Regex>(kGpt2Regex, file + ": ByteLevel pre_tokenizer");
    p->bytes = &bytes;
    return p;
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePreTokenizer>();
    if (j.contains("replacement")) p->replacement = j.at("replacement").get<std::string>();
    if (p->replacement.empty())
      fail(ErrorKind::Format, file, "Metaspace pre_tokenizer replacement is empty");
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null()) {
      const std::string s = j.at("prepend_scheme").get<std::string>();
      if (s == "always")
        p->scheme = PrependScheme::Always;
      else if (s == "first")
        p->scheme = PrependScheme::First;
      else if (s == "never")
        p->scheme = PrependScheme::Never;
      else
        fail(ErrorKind::Format, file, "Metaspace prepend_scheme '" + s + "' is unknown");
    } else {
      p->scheme =
          get_bool(j, "add_prefix_space", true) ? PrependScheme::Always : PrependScheme::Never;
    }
    p->split = get_bool(j, "split", true);
    return p;
  }
  if (type == "Digits") {
    auto p = std::make_unique<RegexPreTokenizer>();
    const bool individual = get_bool(j, "individual_digits", false);
    p->regex = std::make_unique<Regex>(individual ? R"(\p{N})" : R"(\p{N}+)",
                                       file + ": Digits pre_tokenizer");
    return p;
  }
  if (type == "Whitespace") {
    auto p = std::make_unique<RegexPreTokenizer>();
    p->regex = std::make_unique<Regex>(R"(\w+|[^\w\s]+)", file + ": Whitespace pre_tokenizer");
    p->behavior = SplitBehavior::Removed;
    p->invert = true;
    return p;
  }
  if (type == "WhitespaceSplit") {
    auto p = std::make_unique<RegexPreTokenizer>();
    p->regex = std::make_unique<Regex>(R"(\s+)", file + ": WhitespaceSplit pre_tokenizer");
    p->behavior = SplitBehavior::Removed;
    return p;
  }
  fail(ErrorKind::Unsupported, file,
       unsupported_msg("pre_tokenizer", type,
                       "Sequence, Split, ByteLevel, Metaspace, Digits, Whitespace, "
                       "WhitespaceSplit"));
}

// ---------------------------------------------------------------------------------------------
// BPE model

class BpeModel {
 public:
  BpeModel(const json& j, const std::string& file) {
    const std::string type = type_of(j, file, "model");
    if (type != "BPE") fail(ErrorKind::Unsupported, file, unsupported_msg("model", type, "BPE"));
    if (j.contains("dropout") && !j.at("dropout").is_null()) {
      const double d = j.at("dropout").get<double>();
      if (d > 0.0 && d < 1.0)
        fail(ErrorKind::Unsupported, file,
             "BPE dropout " + std::to_string(d) + " is not supported (encoding is deterministic)");
    }
    const json& vocab = j.at("vocab");
    if (!vocab.is_object()) fail(ErrorKind::Format, file, "model.vocab must be a JSON object");
    vocab_.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int64_t id =
          get_int(it.value(), file, "model.vocab id of token '" + it.key() + "'", 0, kMaxId);
      const auto id32 = static_cast<int32_t>(id);
      vocab_[it.key()] = id32;
      if (static_cast<std::size_t>(id32) >= id_to_token_.size()) {
        if (static_cast<std::size_t>(id32) > vocab.size() * 4 + 1024)
          fail(ErrorKind::Format, file,
               "model.vocab id " + std::to_string(id) + " is far beyond the vocabulary size " +
                   std::to_string(vocab.size()));
        id_to_token_.resize(static_cast<std::size_t>(id32) + 1);
        has_id_.resize(static_cast<std::size_t>(id32) + 1, false);
      }
      id_to_token_[static_cast<std::size_t>(id32)] = it.key();
      has_id_[static_cast<std::size_t>(id32)] = true;
    }

    if (j.contains("continuing_subword_prefix") && !j.at("continuing_subword_prefix").is_null())
      prefix_ = j.at("continuing_subword_prefix").get<std::string>();
    if (j.contains("end_of_word_suffix") && !j.at("end_of_word_suffix").is_null())
      suffix_ = j.at("end_of_word_suffix").get<std::string>();
    fuse_unk_ = get_bool(j, "fuse_unk", false);
    byte_fallback_ = get_bool(j, "byte_fallback", false);
    ignore_merges_ = get_bool(j, "ignore_merges", false);
    if (j.contains("unk_token") && !j.at("unk_token").is_null()) {
      unk_token_ = j.at("unk_token").get<std::string>();
      if (auto it = vocab_.find(*unk_token_); it != vocab_.end()) unk_id_ = it->second;
    }
    byte_ids_.fill(-1);
    if (byte_fallback_) {
      for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        if (auto it = vocab_.find(name); it != vocab_.end())
          byte_ids_[static_cast<std::size_t>(b)] = it->second;
      }
    }

    const json& merges = j.contains("merges") ? j.at("merges") : json::array();
    if (!merges.is_array()) fail(ErrorKind::Format, file, "model.merges must be a JSON array");
    merges_.reserve(merges.size());
    uint32_t rank = 0;
    for (const auto& m : merges) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const auto sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail(ErrorKind::Format, file,
               "merge #" + std::to_string(rank) + " '" + s +
                   "' is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail(ErrorKind::Format, file,
             "merge #" + std::to_string(rank) +
                 " must be a \"a b\" string or an [\"a\", \"b\"] pair");
      }
      const auto ia = vocab_.find(a), ib = vocab_.find(b);
      if (ia == vocab_.end() || ib == vocab_.end())
        fail(ErrorKind::Format, file,
             "merge #" + std::to_string(rank) + " '" + a + " " + b +
                 "' uses a token that is not in model.vocab");
      std::string merged = a;
      if (!prefix_.empty() && b.starts_with(prefix_))
        merged += b.substr(prefix_.size());
      else
        merged += b;
      const auto im = vocab_.find(merged);
      if (im == vocab_.end())
        fail(ErrorKind::Format, file,
             "merge #" + std::to_string(rank) + " '" + a + " " + b + "' produces '" + merged +
                 "', which is not in model.vocab");
      merges_.insert_or_assign(pair_key(ia->second, ib->second), MergeInfo{rank, im->second});
      ++rank;
    }
  }

  std::optional<int32_t> token_to_id(std::string_view t) const {
    auto it = vocab_.find(std::string(t));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  const std::string* id_to_token(int32_t id) const {
    if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() ||
        !has_id_[static_cast<std::size_t>(id)])
      return nullptr;
    return &id_to_token_[static_cast<std::size_t>(id)];
  }
  std::size_t id_bound() const { return id_to_token_.size(); }

  void encode_word(const std::string& word, std::vector<int32_t>& out,
                   const std::string& file) const {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (auto it = vocab_.find(word); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (word.size() <= kCacheMaxWordBytes) {
      std::lock_guard lock(cache_->mu);
      if (auto it = cache_->map.find(word); it != cache_->map.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids = merge_word(word, file);
    out.insert(out.end(), ids.begin(), ids.end());
    if (word.size() > kCacheMaxWordBytes) return;
    std::lock_guard lock(cache_->mu);
    if (cache_->map.size() < kCacheCapacity) cache_->map.emplace(word, std::move(ids));
  }

 private:
  struct MergeInfo {
    uint32_t rank;
    int32_t new_id;
  };
  struct Cache {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  static constexpr std::size_t kCacheCapacity = 10000;
  static constexpr std::size_t kCacheMaxWordBytes = 256;

  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  const MergeInfo* find_merge(int32_t a, int32_t b) const {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  }

  std::vector<int32_t> merge_word(const std::string& word, const std::string& file) const {
    // Initial symbols: one per character (byte-fallback tokens or unk for unknown characters).
    std::vector<int32_t> sym;
    sym.reserve(word.size());
    std::optional<int32_t> pending_unk;
    const auto flush_unk = [&] {
      if (pending_unk) sym.push_back(*pending_unk);
      pending_unk.reset();
    };
    std::string piece;
    for (std::size_t i = 0; i < word.size();) {
      const std::size_t start = i;
      i += std::min(detail::utf8_len(static_cast<unsigned char>(word[i])), word.size() - i);
      const std::string_view ch(word.data() + start, i - start);
      piece.clear();
      if (start > 0) piece += prefix_;
      piece += ch;
      if (i == word.size()) piece += suffix_;
      if (auto it = vocab_.find(piece); it != vocab_.end()) {
        flush_unk();
        sym.push_back(it->second);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (char c : ch) all &= byte_ids_[static_cast<unsigned char>(c)] >= 0;
        if (all) {
          flush_unk();
          for (char c : ch) sym.push_back(byte_ids_[static_cast<unsigned char>(c)]);
          continue;
        }
      }
      if (unk_token_) {
        if (!unk_id_)
          fail(ErrorKind::Format, file,
               "model.unk_token '" + *unk_token_ + "' is needed but not in model.vocab");
        if (pending_unk && !fuse_unk_) flush_unk();
        pending_unk = *unk_id_;
      }
      // Without an unk token, an unknown character is dropped (as the reference does).
    }
    flush_unk();
    if (sym.size() < 2 || merges_.empty()) return sym;

    // Rank-ordered merging over a doubly linked list of symbols: always the lowest rank first,
    // the leftmost on ties; stale queue entries are skipped.
    const std::size_t n = sym.size();
    std::vector<long> prev(n), next(n);
    std::vector<char> alive(n, 1);
    for (std::size_t k = 0; k < n; ++k) {
      prev[k] = static_cast<long>(k) - 1;
      next[k] = k + 1 < n ? static_cast<long>(k + 1) : -1;
    }
    struct Entry {
      uint32_t rank;
      std::size_t pos;
      int32_t new_id;
      bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
    for (std::size_t k = 0; k + 1 < n; ++k)
      if (const MergeInfo* m = find_merge(sym[k], sym[k + 1])) queue.push({m->rank, k, m->new_id});
    while (!queue.empty()) {
      const Entry top = queue.top();
      queue.pop();
      if (!alive[top.pos] || next[top.pos] < 0) continue;
      const auto right = static_cast<std::size_t>(next[top.pos]);
      const MergeInfo* cur = find_merge(sym[top.pos], sym[right]);
      if (!cur || cur->new_id != top.new_id) continue;
      sym[top.pos] = top.new_id;
      alive[right] = 0;
      next[top.pos] = next[right];
      if (next[right] >= 0)
        prev[static_cast<std::size_t>(next[right])] = static_cast<long>(top.pos);
      if (prev[top.pos] >= 0) {
        const auto p = static_cast<std::size_t>(prev[top.pos]);
        if (const MergeInfo* m = find_merge(sym[p], sym[top.pos]))
          queue.push({m->rank, p, m->new_id});
      }
      if (next[top.pos] >= 0) {
        const auto q = static_cast<std::size_t>(next[top.pos]);
        if (const MergeInfo* m = find_merge(sym[top.pos], sym[q]))
          queue.push({m->rank, top.pos, m->new_id});
      }
    }
    std::vector<int32_t> result;
    result.reserve(n);
    for (long k = 0; k >= 0; k = next[static_cast<std::size_t>(k)])
      result.push_back(sym[static_cast<std::size_t>(k)]);
    return result;
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, MergeInfo> merges_;
  std::string prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::optional<std::string> unk_token_;
  std::optional<int32_t> unk_id_;
  std::array<int32_t, 256> byte_ids_{};
  std::unique_ptr<Cache> cache_ = std::make_unique<Cache>();
};

// ---------------------------------------------------------------------------------------------
// Post-processors (single sequence only)

struct PostProcessor {
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<int32_t>& ids) const = 0;
  virtual std::optional<int32_t> leading_special() const { return std::nullopt; }
  virtual std::optional<int32_t> trailing_special() const { return std::nullopt; }
};

struct NoopPostProcessor : PostProcessor {
  void apply(std::vector<int32_t>&) const override {}
};

// Any of TemplateProcessing / BertProcessing / RobertaProcessing: fixed ids before and after.
struct WrapPostProcessor : PostProcessor {
  std::vector<int32_t> before, after;
  void apply(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before.begin(), before.end());
    ids.insert(ids.end(), after.begin(), after.end());
  }
  std::optional<int32_t> leading_special() const override {
    if (before.empty()) return std::nullopt;
    return before.front();
  }
  std::optional<int32_t> trailing_special() const override {
    if (after.empty()) return std::nullopt;
    return after.back();
  }
};

struct SequencePostProcessor : PostProcessor {
  std::vector<std::unique_ptr<PostProcessor>> items;
  void apply(std::vector<int32_t>& ids) const override {
    for (const auto& p : items) p->apply(ids);
  }
  std::optional<int32_t> leading_special() const override {
    for (const auto& p : items)
      if (auto v = p->leading_special()) return v;
    return std::nullopt;
  }
  std::optional<int32_t> trailing_special() const override {
    for (auto it = items.rbegin(); it != items.rend(); ++it)
      if (auto v = (*it)->trailing_special()) return v;
    return std::nullopt;
  }
};

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& file) {
  auto p = std::make_unique<WrapPostProcessor>();
  const json& specials = j.contains("special_tokens") ? j.at("special_tokens") : json::object();
  const auto special_ids = [&](const std::string& name) {
    auto it = specials.find(name);
    if (it == specials.end())
      fail(ErrorKind::Format, file,
           "TemplateProcessing uses special token '" + name + "' missing from special_tokens");
    std::vector<int32_t> ids;
    for (const auto& v : it->at("ids"))
      ids.push_back(
          static_cast<int32_t>(get_int(v, file, "special_tokens['" + name + "'] id", 0, kMaxId)));
    return ids;
  };
  const json& single = j.at("single");
  bool seen_sequence = false;
  const auto add_special = [&](const std::string& name) {
    auto ids = special_ids(name);
    auto& dst = seen_sequence ? p->after : p->before;
    dst.insert(dst.end(), ids.begin(), ids.end());
  };
  if (single.is_string()) {
    // Compact form: "<s> $A </s>" with optional ":type_id" suffixes.
    std::istringstream in(single.get<std::string>());
    std::string item;
    while (in >> item) {
      if (item.starts_with("$")) {
        seen_sequence = true;
        continue;
      }
      if (auto c = item.rfind(':'); c != std::string::npos && c > 0) item.resize(c);
      add_special(item);
    }
  } else {
    for (const auto& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        add_special(item.at("SpecialToken").at("id").get<std::string>());
      } else {
        fail(ErrorKind::Format, file,
             "TemplateProcessing item must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  }
  return p;
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& file,
                                                   int depth = 0) {
  check_depth(depth, file, "post_processor");
  const std::string type = type_of(j, file, "post_processor");
  if (type == "TemplateProcessing") return make_template(j, file);
  if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto p = std::make_unique<WrapPostProcessor>();
    p->before.push_back(
        static_cast<int32_t>(get_int(j.at("cls").at(1), file, type + " cls id", 0, kMaxId)));
    p->after.push_back(
        static_cast<int32_t>(get_int(j.at("sep").at(1), file, type + " sep id", 0, kMaxId)));
    return p;
  }
  if (type == "Sequence") {
    auto p = std::make_unique<SequencePostProcessor>();
    for (const auto& item : j.at("processors"))
      p->items.push_back(make_post_processor(item, file, depth + 1));
    return p;
  }
  fail(ErrorKind::Unsupported, file,
       unsupported_msg("post_processor", type,
                       "TemplateProcessing, ByteLevel, Sequence, BertProcessing, "
                       "RobertaProcessing"));
}

// ---------------------------------------------------------------------------------------------
// Decoders: each maps the list of token strings to a new list; the result is their concatenation.

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

struct SequenceDecoder : Decoder {
  std::vector<std::unique_ptr<Decoder>> items;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : items) d->apply(tokens);
  }
};

struct ByteLevelDecoder : Decoder {
  const ByteMap* bytes = nullptr;
  void apply(std::vector<std::string>& tokens) const override {
    std::string raw;
    for (const auto& t : tokens) {
      const std::size_t mark = raw.size();
      bool all = true;
      for (std::size_t i = 0; i < t.size();) {
        const char32_t c = detail::utf8_next(t, i);
        const int b = c < bytes->char_to_byte.size() ? bytes->char_to_byte[c] : -1;
        if (b < 0) {
          all = false;
          break;
        }
        raw.push_back(static_cast<char>(b));
      }
      if (!all) {
        raw.resize(mark);
        raw += t;
      }
    }
    tokens.assign(1, detail::utf8_lossy(raw));
  }
};

struct ReplaceDecoder : Decoder {
  std::unique_ptr<Pattern> pattern;
  std::string content;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern->replace_all(t, content);
  }
};

struct ByteFallbackDecoder : Decoder {
  static std::optional<uint8_t> byte_of(const std::string& t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return std::nullopt;
    const auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int lo = hex(t[4]);
    if (lo < 0) return std::nullopt;
    if (t[3] == '+') return static_cast<uint8_t>(lo);
    const int hi = hex(t[3]);
    if (hi < 0) return std::nullopt;
    return static_cast<uint8_t>(hi * 16 + lo);
  }
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      if (detail::utf8_invalid_offset(pending) == std::string::npos) {
        out.push_back(pending);
      } else {
        for (std::size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      if (auto b = byte_of(t)) {
        pending.push_back(static_cast<char>(*b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDecoder : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

struct StripDecoder : Decoder {
  char32_t content = ' ';
  std::size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::size_t> bounds;  // byte offset of each character, plus the end
      for (std::size_t i = 0; i < t.size();) {
        bounds.push_back(i);
        detail::utf8_next(t, i);
      }
      const std::size_t nchars = bounds.size();
      bounds.push_back(t.size());
      const auto char_at = [&](std::size_t k) {
        std::size_t i = bounds[k];
        return detail::utf8_next(t, i);
      };
      std::size_t cut_start = 0;
      for (std::size_t k = 0; k < std::min(start, nchars) && char_at(k) == content; ++k)
        cut_start = k + 1;
      std::size_t cut_stop = nchars;
      for (std::size_t k = 0; k < std::min(stop, nchars); ++k) {
        const std::size_t idx = nchars - k - 1;
        if (char_at(idx) != content) break;
        cut_stop = idx;
      }
      if (cut_stop < cut_start) cut_stop = cut_start;
      t = t.substr(bounds[cut_start], bounds[cut_stop] - bounds[cut_start]);
    }
  }
};

struct MetaspaceDecoder : Decoder {
  std::string replacement = "\xE2\x96\x81";
  bool strip_first = true;
  void apply(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      const std::string_view with = (i == 0 && strip_first) ? "" : " ";
      std::string r;
      r.reserve(t.size());
      std::size_t prev = 0;
      for (std::size_t p = t.find(replacement); p != std::string::npos;
           p = t.find(replacement, prev)) {
        r.append(t, prev, p - prev);
        r.append(with);
        prev = p + replacement.size();
      }
      r.append(t, prev);
      tokens[i] = std::move(r);
    }
  }
};

char32_t single_char(const json& j, const std::string& file, const std::string& where) {
  const std::string s = j.get<std::string>();
  std::size_t i = 0;
  if (s.empty() || detail::utf8_invalid_offset(s) != std::string::npos)
    fail(ErrorKind::Format, file, where + " must be one character");
  const char32_t c = detail::utf8_next(s, i);
  if (i != s.size()) fail(ErrorKind::Format, file, where + " must be one character");
  return c;
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& file, const ByteMap& bytes,
                                      int depth = 0) {
  check_depth(depth, file, "decoder");
  const std::string type = type_of(j, file, "decoder");
  if (type == "Sequence") {
    auto d = std::make_unique<SequenceDecoder>();
    for (const auto& item : j.at("decoders"))
      d->items.push_back(make_decoder(item, file, bytes, depth + 1));
    return d;
  }
  if (type == "ByteLevel") {
    auto d = std::make_unique<ByteLevelDecoder>();
    d->bytes = &bytes;
    return d;
  }
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->pattern = std::make_unique<Pattern>(j.at("pattern"), file, "Replace decoder");
    d->content = j.at("content").get<std::string>();
    return d;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = single_char(j.at("content"), file, "Strip decoder content");
    d->start = static_cast<std::size_t>(get_int(j.at("start"), file, "Strip start", 0, INT32_MAX));
    d->stop = static_cast<std::size_t>(get_int(j.at("stop"), file, "Strip stop", 0, INT32_MAX));
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    if (j.contains("replacement")) d->replacement = j.at("replacement").get<std::string>();
    if (d->replacement.empty())
      fail(ErrorKind::Format, file, "Metaspace decoder replacement is empty");
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null())
      d->strip_first = j.at("prepend_scheme").get<std::string>() != "never";
    else
      d->strip_first = get_bool(j, "add_prefix_space", true);
    return d;
  }
  fail(ErrorKind::Unsupported, file,
       unsupported_msg("decoder", type,
                       "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace"));
}

// ---------------------------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  std::string content;  // as matched (normalized first when `normalized` is set)
  int32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest matcher over a set of added tokens (a byte trie).
class AddedMatcher {
 public:
  void add(const std::string& content, std::size_t token_index) {
    if (content.empty()) return;
    if (nodes_.empty()) nodes_.emplace_back();
    std::size_t node = 0;
    for (char c : content) {
      const auto b = static_cast<unsigned char>(c);
      auto it = nodes_[node].children.find(b);
      if (it == nodes_[node].children.end()) {
        nodes_.emplace_back();
        const std::size_t child = nodes_.size() - 1;
        nodes_[node].children.emplace(b, child);
        node = child;
      } else {
        node = it->second;
      }
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<long>(token_index);
    first_byte_[static_cast<unsigned char>(content[0])] = true;
  }
  bool empty() const { return nodes_.empty(); }

  // Longest token starting at `pos`: (end, token index) or token index -1.
  std::pair<std::size_t, long> longest_at(std::string_view s, std::size_t pos) const {
    std::pair<std::size_t, long> best{pos, -1};
    if (!first_byte_[static_cast<unsigned char>(s[pos])]) return best;
    std::size_t node = 0;
    for (std::size_t i = pos; i < s.size(); ++i) {
      auto it = nodes_[node].children.find(static_cast<unsigned char>(s[i]));
      if (it == nodes_[node].children.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) best = {i + 1, nodes_[node].token};
    }
    return best;
  }

 private:
  struct Node {
    std::unordered_map<unsigned char, std::size_t> children;
    long token = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

// A part of the input: either text still to be tokenized, or an added token id.
struct Segment {
  std::string text;
  int32_t id = -1;
  bool at_start = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::string file;
  ByteMap bytes;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, std::size_t> added_by_id;
  AddedMatcher raw_matcher, normalized_matcher;
  std::unique_ptr<Regex> word_char;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post;
  std::unique_ptr<Decoder> decoder;
  std::optional<int32_t> bos, eos;
  std::size_t vocab_size = 0;

  void split_added(const Segment& seg, const AddedMatcher& matcher,
                   std::vector<Segment>& out) const;
};

namespace {

bool is_space_at(std::string_view s, std::size_t i, std::size_t* len) {
  std::size_t j = i;
  const char32_t c = detail::utf8_next(s, j);
  *len = j - i;
  return detail::is_unicode_whitespace(c);
}

}  // namespace

void Tokenizer::Impl::split_added(const Segment& seg, const AddedMatcher& matcher,
                                  std::vector<Segment>& out) const {
  const std::string& s = seg.text;
  if (matcher.empty()) {
    if (!s.empty()) out.push_back(seg);
    return;
  }
  std::size_t emitted = 0;  // text before this offset has been emitted
  std::size_t pos = 0;
  while (pos < s.size()) {
    const auto [end, index] = matcher.longest_at(s, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = added[static_cast<std::size_t>(index)];
    std::size_t start = pos, stop = end;
    pos = end;
    if (tok.single_word) {
      bool before_ok = start == 0, after_ok = stop == s.size();
      if (!before_ok) {
        std::size_t k = start - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        before_ok = !word_char->matches_at(s, k);
      }
      if (!after_ok) after_ok = !word_char->matches_at(s, stop);
      if (!before_ok || !after_ok) continue;
    }
    if (start < emitted) continue;
    if (tok.lstrip) {
      // Absorb the whitespace just before the token (not crossing earlier output).
      std::size_t k = start;
      while (k > emitted) {
        std::size_t b = k - 1;
        while (b > emitted && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
        std::size_t len;
        if (!is_space_at(s, b, &len)) break;
        k = b;
      }
      start = k;
    }
    if (tok.rstrip) {
      std::size_t len;
      while (stop < s.size() && is_space_at(s, stop, &len)) stop += len;
      pos = stop;
    }
    if (start > emitted)
      out.push_back({s.substr(emitted, start - emitted), -1, seg.at_start && emitted == 0});
    out.push_back({{}, tok.id, false});
    emitted = stop;
  }
  if (emitted < s.size()) out.push_back({s.substr(emitted), -1, seg.at_start && emitted == 0});
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace {

std::optional<std::string> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return ss.str();
}

// Name of a bos_token / eos_token entry of tokenizer_config.json (a string or {"content": ...}).
std::optional<std::string> config_token(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && it->at("content").is_string())
    return it->at("content").get<std::string>();
  return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path / "tokenizer.json";
  if (!std::filesystem::exists(file, ec))
    throw Error(ErrorKind::Io,
                std::filesystem::is_directory(path, ec) ? "directory has no tokenizer.json"
                                                        : "tokenizer file does not exist",
                file.string());
  auto text = read_file(file);
  if (!text) throw Error(ErrorKind::Io, "cannot read tokenizer file", file.string());
  Tokenizer tok = from_json_string(*text, file.string());

  // Optional tokenizer_config.json next to it: names of the BOS / EOS tokens.
  const auto cfg_path = file.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(cfg_path, ec)) {
    auto cfg_text = read_file(cfg_path);
    if (!cfg_text) throw Error(ErrorKind::Io, "cannot read file", cfg_path.string());
    json cfg = json::parse(*cfg_text, nullptr, false);
    if (cfg.is_discarded() || !cfg.is_object())
      throw Error(ErrorKind::Format, "not a valid JSON object", cfg_path.string());
    if (auto name = config_token(cfg, "bos_token")) {
      if (auto id = tok.token_to_id(*name)) tok.impl_->bos = id;
    }
    if (auto name = config_token(cfg, "eos_token")) {
      if (auto id = tok.token_to_id(*name)) tok.impl_->eos = id;
    }
  }
  return tok;
}

Tokenizer Tokenizer::from_json_string(std::string_view text, std::string source) {
  auto impl = std::make_unique<Impl>();
  impl->file = source;
  const std::string& file = impl->file;
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded()) throw Error(ErrorKind::Format, "not valid JSON", file);
  if (!j.is_object()) throw Error(ErrorKind::Format, "top level is not a JSON object", file);
  try {
    if (!j.contains("model")) throw Error(ErrorKind::Format, "has no 'model' section", file);
    const auto section = [&](const char* key) -> const json* {
      auto it = j.find(key);
      return (it == j.end() || it->is_null()) ? nullptr : &*it;
    };
    if (const json* n = section("normalizer")) impl->normalizer = make_normalizer(*n, file);
    if (const json* p = section("pre_tokenizer"))
      impl->pre_tokenizer = make_pre_tokenizer(*p, file, impl->bytes);
    impl->model = std::make_unique<BpeModel>(j.at("model"), file);
    if (const json* p = section("post_processor")) impl->post = make_post_processor(*p, file);
    if (const json* d = section("decoder")) impl->decoder = make_decoder(*d, file, impl->bytes);
    impl->word_char = std::make_unique<Regex>(R"(\w)", file + ": word character class");

    std::size_t bound = impl->model->id_bound();
    if (const json* a = section("added_tokens")) {
      if (!a->is_array()) throw Error(ErrorKind::Format, "added_tokens must be a JSON array", file);
      for (const auto& item : *a) {
        AddedToken t;
        const int64_t id = get_int(item.at("id"), file, "added token id", 0, kMaxId);
        t.id = static_cast<int32_t>(id);
        t.content = item.at("content").get<std::string>();
        if (detail::utf8_invalid_offset(t.content) != std::string::npos)
          throw Error(ErrorKind::Format,
                      "added token " + std::to_string(id) + " is not valid UTF-8", file);
        t.single_word = get_bool(item, "single_word", false);
        t.lstrip = get_bool(item, "lstrip", false);
        t.rstrip = get_bool(item, "rstrip", false);
        t.special = get_bool(item, "special", false);
        t.normalized = get_bool(item, "normalized", !t.special);
        impl->added_by_content[t.content] = t.id;
        impl->added_by_id[t.id] = impl->added.size();
        bound = std::max(bound, static_cast<std::size_t>(t.id) + 1);
        impl->added.push_back(std::move(t));
      }
      for (std::size_t i = 0; i < impl->added.size(); ++i) {
        const AddedToken& t = impl->added[i];
        if (t.normalized) {
          std::string c = t.content;
          if (impl->normalizer) impl->normalizer->apply(c);
          impl->normalized_matcher.add(c, i);
        } else {
          impl->raw_matcher.add(t.content, i);
        }
      }
    }
    impl->vocab_size = bound;
    if (!impl->post) impl->post = std::make_unique<NoopPostProcessor>();
    impl->bos = impl->post->leading_special();
    impl->eos = impl->post->trailing_special();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::Format, std::string("unexpected JSON structure: ") + e.what(), file);
  }
  Tokenizer tok(std::move(impl));
  // Without a template, fall back on the customary names.
  if (!tok.impl_->bos)
    for (const char* name : {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"})
      if (auto id = tok.token_to_id(name); id && tok.is_special(*id)) {
        tok.impl_->bos = id;
        break;
      }
  if (!tok.impl_->eos)
    for (const char* name : {"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"})
      if (auto id = tok.token_to_id(name); id && tok.is_special(*id)) {
        tok.impl_->eos = id;
        break;
      }
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (const auto bad = detail::utf8_invalid_offset(text); bad != std::string_view::npos)
    throw Error(ErrorKind::Usage,
                "text to encode is not valid UTF-8 (byte offset " + std::to_string(bad) + ")",
                m.file);
  std::vector<int32_t> ids;
  std::vector<Segment> raw_parts, parts;
  m.split_added(Segment{std::string(text), -1, true}, m.raw_matcher, raw_parts);
  for (auto& seg : raw_parts) {
    if (seg.id >= 0) {
      parts.push_back(std::move(seg));
      continue;
    }
    if (m.normalizer) m.normalizer->apply(seg.text);
    m.split_added(seg, m.normalized_matcher, parts);
  }
  Pieces pieces;
  for (auto& seg : parts) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    pieces.clear();
    pieces.push_back({std::move(seg.text), seg.at_start});
    if (m.pre_tokenizer) m.pre_tokenizer->apply(pieces);
    for (const auto& p : pieces) m.model->encode_word(p.text, ids, m.file);
  }
  if (add_special_tokens) m.post->apply(ids);
  return ids;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end())
    return impl_->added[it->second].content;
  if (const std::string* t = impl_->model->id_to_token(id)) return *t;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(std::string(token));
      it != impl_->added_by_content.end())
    return it->second;
  return impl_->model->token_to_id(token);
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    if (auto t = id_to_token(id)) toks.push_back(std::move(*t));
  }
  if (!impl_->decoder) {
    std::string r;
    for (std::size_t i = 0; i < toks.size(); ++i) {
      if (i) r += ' ';
      r += toks[i];
    }
    return r;
  }
  impl_->decoder->apply(toks);
  std::string r;
  for (const auto& t : toks) r += t;
  return r;
}

std::vector<std::string> Tokenizer::tokens(std::span<const int32_t> ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    auto t = id_to_token(id);
    if (!t)
      throw Error(ErrorKind::Usage, "token id " + std::to_string(id) + " is not in the vocabulary",
                  impl_->file);
    out.push_back(std::move(*t));
  }
  return out;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::size_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

}  // namespace deltaedit::text
