// Final-answer extraction and comparison for GSM8K-style responses ("... #### 42"), used by the
// task generator's self-checks and by the evaluation code.
//
// Convention:
//   * The answer is the first number after the last "####" in the text. When there is no "####",
//     or nothing numeric follows the last one, it is the last number anywhere in the text.
//   * A number is an optional minus sign, digits with optional thousands separators ("1,234":
//     a comma followed by exactly three digits) and an optional fraction (".5"). A dot not
//     followed by a digit ends the number ("6." → "6").
//   * Normalisation: commas removed, leading zeros removed, trailing fractional zeros removed
//     ("5.0" → "5", "2.50" → "2.5"), "-0" → "0".
//   * answers_match compares the normalised strings exactly; an empty answer never matches.
#pragma once
#include <string>
#include <string_view>

namespace deltaedit::text {

// The normalised final answer of `text`, or "" when it holds no number.
std::string extract_answer(std::string_view text);

// Normalises one number as written ("1,234", "5.0", "-0", " 7 "); "" when `number` is not
// exactly one number (surrounding whitespace allowed).
std::string normalize_number(std::string_view number);

// Whether two answers (raw or already normalised) are the same number. False when either is
// empty or not a number.
bool answers_match(std::string_view a, std::string_view b);

}  // namespace deltaedit::text
