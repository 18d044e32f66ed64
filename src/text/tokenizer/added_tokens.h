// Added tokens (the "added_tokens" array): matched in the text before the model sees it,
// leftmost-longest, with the single_word / lstrip / rstrip / normalized / special flags. Tokens
// with normalized=false are found in the raw text, the others in the normalized text. Internal.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/tokenizer/common.h"
#include "text/tokenizer/normalizers.h"

namespace deltaedit::text::detail {

struct AddedToken {
  std::string content;  // as matched (normalized first when `normalized` is set)
  int32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest matcher over a set of added tokens (a byte trie).
class AddedMatcher {
 public:
  void add(const std::string& content, std::size_t token_index);
  bool empty() const { return nodes_.empty(); }

  // Longest token starting at `pos`: (end, token index) or token index -1.
  std::pair<std::size_t, long> longest_at(std::string_view s, std::size_t pos) const;

 private:
  struct Node {
    std::unordered_map<unsigned char, std::size_t> children;
    long token = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

// A part of the input: either text still to be tokenized (normalized), or an added token id.
struct Segment {
  std::string text;
  int32_t id = -1;
  bool at_start = false;
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `added_tokens` is the JSON array (null: none); `normalizer` (may be null) is the tokenizer's,
  // applied to the content of normalized tokens, and must outlive this vocabulary.
  // Error(Format) naming `file` for malformed entries.
  AddedVocabulary(const json* added_tokens, const Normalizer* normalizer, const std::string& file);

  // Splits `text` at the added tokens, normalizing the text between them.
  std::vector<Segment> extract_and_normalize(std::string_view text) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;
  // Highest added id plus one (0 when there are none).
  std::size_t id_bound() const { return id_bound_; }

 private:
  void split(const Segment& seg, const AddedMatcher& matcher, std::vector<Segment>& out) const;

  std::vector<AddedToken> added_;
  std::unordered_map<std::string, int32_t> by_content_;
  std::unordered_map<int32_t, std::size_t> by_id_;
  AddedMatcher raw_matcher_, normalized_matcher_;
  const Normalizer* normalizer_ = nullptr;
  std::unique_ptr<Regex> word_char_;
  std::size_t id_bound_ = 0;
};

}  // namespace deltaedit::text::detail
