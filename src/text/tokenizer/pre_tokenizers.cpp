#include "text/tokenizer/pre_tokenizers.h"

#include <algorithm>

namespace deltaedit::text::detail {

namespace {

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

  Ranges kept;
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

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& file,
                                                 const ByteMap& bytes, int depth) {
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

}  // namespace deltaedit::text::detail
