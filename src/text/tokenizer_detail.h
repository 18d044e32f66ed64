// Internal helpers of the tokenizer (and the zoo's BPE trainer): UTF-8 utilities and the regex
// the tokenizer's components use, with its error messages, on util::Regex. Not part of the
// public API.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/regex.h"

namespace deltaedit::text::detail {

// Length in bytes of the UTF-8 sequence starting with lead byte `b` (1 for invalid leads).
inline std::size_t utf8_len(unsigned char b) {
  if (b < 0x80) return 1;
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

// Decodes the code point at s[i] (s must be valid UTF-8) and advances i.
char32_t utf8_next(std::string_view s, std::size_t& i);
void utf8_append(std::string& out, char32_t cp);

// Offset of the first invalid byte, or npos when `s` is valid UTF-8.
std::size_t utf8_invalid_offset(std::string_view s);

// Converts bytes to a string, replacing every maximal invalid subsequence by U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Unicode White_Space property.
bool is_unicode_whitespace(char32_t cp);

// A compiled PCRE2 pattern (UTF + UCP, invalid UTF-8 never matches, JIT, bounded backtracking),
// immutable and safe to share between threads.
class Regex {
 public:
  // Throws Error(Format) naming `where` when the pattern does not compile.
  Regex(std::string_view pattern, const std::string& where);

  // Appends the byte ranges [begin, end) of all non-overlapping, non-empty matches in `s`.
  // Throws Error(Usage) when a match exceeds the backtracking limits.
  void find_all(std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) const;

  // Whether the pattern matches at exactly position `pos` of `s`.
  bool matches_at(std::string_view s, std::size_t pos) const;

 private:
  util::Regex re_;
  std::string where_;
};

}  // namespace deltaedit::text::detail
