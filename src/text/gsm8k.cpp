#include "text/gsm8k.h"

#include <cstddef>
#include <optional>

namespace deltaedit::text {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

struct NumberSpan {
  std::size_t begin, end;
};

// Length of the number starting at s[i] (which must be a digit), thousands separators and
// fraction included.
std::size_t number_length(std::string_view s, std::size_t i) {
  std::size_t j = i;
  while (j < s.size() && is_digit(s[j])) ++j;
  // Thousands groups: ",ddd" not followed by another digit.
  while (j + 3 < s.size() && s[j] == ',' && is_digit(s[j + 1]) && is_digit(s[j + 2]) &&
         is_digit(s[j + 3]) && (j + 4 >= s.size() || !is_digit(s[j + 4])))
    j += 4;
  if (j + 1 < s.size() && s[j] == '.' && is_digit(s[j + 1])) {
    j += 1;
    while (j < s.size() && is_digit(s[j])) ++j;
  }
  return j - i;
}

// Whether a '-' at s[i - 1] is a minus sign of the number at s[i] (not a hyphen or the binary
// operator "8-2").
bool has_sign(std::string_view s, std::size_t i) {
  if (i == 0 || s[i - 1] != '-') return false;
  if (i == 1) return true;
  const char p = s[i - 2];
  const bool word_char = is_digit(p) || (p >= 'a' && p <= 'z') || (p >= 'A' && p <= 'Z');
  return !word_char;
}

// All numbers in s[from, ...), in order; stops after the first when `first_only`.
std::optional<NumberSpan> scan(std::string_view s, std::size_t from, bool first_only) {
  std::optional<NumberSpan> last;
  std::size_t i = from;
  while (i < s.size()) {
    if (!is_digit(s[i])) {
      ++i;
      continue;
    }
    const std::size_t len = number_length(s, i);
    const std::size_t begin = (i > from && has_sign(s, i)) ? i - 1 : i;
    last = NumberSpan{begin, i + len};
    if (first_only) return last;
    i += len;
  }
  return last;
}

// Normalises a syntactically valid number (as matched by scan).
std::string normalize_span(std::string_view n) {
  bool negative = false;
  if (!n.empty() && n.front() == '-') {
    negative = true;
    n.remove_prefix(1);
  }
  std::string int_part, frac_part;
  const std::size_t dot = n.find('.');
  for (char c : n.substr(0, dot))
    if (c != ',') int_part += c;
  if (dot != std::string_view::npos) frac_part = std::string(n.substr(dot + 1));
  while (!frac_part.empty() && frac_part.back() == '0') frac_part.pop_back();
  std::size_t z = 0;
  while (z + 1 < int_part.size() && int_part[z] == '0') ++z;
  int_part.erase(0, z);
  if (int_part.empty()) int_part.push_back('0');
  std::string out = int_part;
  if (!frac_part.empty()) out += "." + frac_part;
  if (negative && out != "0") out.insert(out.begin(), '-');
  return out;
}

}  // namespace

std::string extract_answer(std::string_view text) {
  const std::size_t marker = text.rfind("####");
  if (marker != std::string_view::npos) {
    if (auto n = scan(text, marker + 4, /*first_only=*/true))
      return normalize_span(text.substr(n->begin, n->end - n->begin));
  }
  if (auto n = scan(text, 0, /*first_only=*/false))
    return normalize_span(text.substr(n->begin, n->end - n->begin));
  return {};
}

std::string normalize_number(std::string_view number) {
  while (!number.empty() && (number.front() == ' ' || number.front() == '\t' ||
                             number.front() == '\n' || number.front() == '\r'))
    number.remove_prefix(1);
  while (!number.empty() && (number.back() == ' ' || number.back() == '\t' ||
                             number.back() == '\n' || number.back() == '\r'))
    number.remove_suffix(1);
  std::size_t start = 0;
  if (!number.empty() && number.front() == '-') start = 1;
  if (start >= number.size() || !is_digit(number[start])) return {};
  if (start + number_length(number, start) != number.size()) return {};
  return normalize_span(number);
}

bool answers_match(std::string_view a, std::string_view b) {
  const std::string na = normalize_number(a);
  const std::string nb = normalize_number(b);
  return !na.empty() && na == nb;
}

}  // namespace deltaedit::text
