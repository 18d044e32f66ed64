#include "text/tokenizer/added_tokens.h"

#include <algorithm>

namespace deltaedit::text::detail {

void AddedMatcher::add(const std::string& content, std::size_t token_index) {
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

std::pair<std::size_t, long> AddedMatcher::longest_at(std::string_view s, std::size_t pos) const {
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

AddedVocabulary::AddedVocabulary(const json* a, const Normalizer* normalizer,
                                 const std::string& file)
    : normalizer_(normalizer),
      word_char_(std::make_unique<Regex>(R"(\w)", file + ": word character class")) {
  if (!a) return;
  if (!a->is_array()) throw Error(ErrorKind::Format, "added_tokens must be a JSON array", file);
  for (const auto& item : *a) {
    AddedToken t;
    const int64_t id = get_int(item.at("id"), file, "added token id", 0, kMaxId);
    t.id = static_cast<int32_t>(id);
    t.content = item.at("content").get<std::string>();
    if (utf8_invalid_offset(t.content) != std::string::npos)
      throw Error(ErrorKind::Format, "added token " + std::to_string(id) + " is not valid UTF-8",
                  file);
    t.single_word = get_bool(item, "single_word", false);
    t.lstrip = get_bool(item, "lstrip", false);
    t.rstrip = get_bool(item, "rstrip", false);
    t.special = get_bool(item, "special", false);
    t.normalized = get_bool(item, "normalized", !t.special);
    by_content_[t.content] = t.id;
    by_id_[t.id] = added_.size();
    id_bound_ = std::max(id_bound_, static_cast<std::size_t>(t.id) + 1);
    added_.push_back(std::move(t));
  }
  for (std::size_t i = 0; i < added_.size(); ++i) {
    const AddedToken& t = added_[i];
    if (t.normalized) {
      std::string c = t.content;
      if (normalizer_) normalizer_->apply(c);
      normalized_matcher_.add(c, i);
    } else {
      raw_matcher_.add(t.content, i);
    }
  }
}

std::optional<int32_t> AddedVocabulary::token_to_id(std::string_view token) const {
  if (auto it = by_content_.find(std::string(token)); it != by_content_.end()) return it->second;
  return std::nullopt;
}

const std::string* AddedVocabulary::id_to_token(int32_t id) const {
  if (auto it = by_id_.find(id); it != by_id_.end()) return &added_[it->second].content;
  return nullptr;
}

bool AddedVocabulary::is_special(int32_t id) const {
  auto it = by_id_.find(id);
  return it != by_id_.end() && added_[it->second].special;
}

std::vector<Segment> AddedVocabulary::extract_and_normalize(std::string_view text) const {
  std::vector<Segment> raw_parts, parts;
  split(Segment{std::string(text), -1, true}, raw_matcher_, raw_parts);
  for (auto& seg : raw_parts) {
    if (seg.id >= 0) {
      parts.push_back(std::move(seg));
      continue;
    }
    if (normalizer_) normalizer_->apply(seg.text);
    split(seg, normalized_matcher_, parts);
  }
  return parts;
}

namespace {

bool is_space_at(std::string_view s, std::size_t i, std::size_t* len) {
  std::size_t j = i;
  const char32_t c = utf8_next(s, j);
  *len = j - i;
  return is_unicode_whitespace(c);
}

}  // namespace

void AddedVocabulary::split(const Segment& seg, const AddedMatcher& matcher,
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
    const AddedToken& tok = added_[static_cast<std::size_t>(index)];
    std::size_t start = pos, stop = end;
    pos = end;
    if (tok.single_word) {
      bool before_ok = start == 0, after_ok = stop == s.size();
      if (!before_ok) {
        std::size_t k = start - 1;
        while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
        before_ok = !word_char_->matches_at(s, k);
      }
      if (!after_ok) after_ok = !word_char_->matches_at(s, stop);
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

}  // namespace deltaedit::text::detail
