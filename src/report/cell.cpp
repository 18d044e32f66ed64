#include "report/cell.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace deltaedit::report {
namespace {

std::string non_finite(double v) {
  if (std::isnan(v)) return "NaN";
  return v > 0 ? "inf" : "-inf";
}

// Drops trailing zeros of a fraction part ("1.2500" -> "1.25", "3.000" -> "3").
std::string trim_fraction(std::string s) {
  const auto e = s.find_first_of("eE");
  std::string exponent = e == std::string::npos ? "" : s.substr(e);
  std::string mantissa = e == std::string::npos ? s : s.substr(0, e);
  if (mantissa.find('.') != std::string::npos) {
    while (!mantissa.empty() && mantissa.back() == '0') mantissa.pop_back();
    if (!mantissa.empty() && mantissa.back() == '.') mantissa.pop_back();
  }
  return mantissa + exponent;
}

// "1.5e-05" -> "1.5e-5", "2e+07" -> "2e7".
std::string tidy_exponent(const std::string& s) {
  const auto e = s.find('e');
  if (e == std::string::npos) return s;
  std::string out = s.substr(0, e + 1);
  std::size_t i = e + 1;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    if (s[i] == '-') out += '-';
    ++i;
  }
  while (i + 1 < s.size() && s[i] == '0') ++i;
  out += s.substr(i);
  return out;
}

std::string group_thousands(std::int64_t v) {
  const unsigned long long magnitude =
      v < 0 ? 0ULL - static_cast<unsigned long long>(v) : static_cast<unsigned long long>(v);
  const std::string digits = std::to_string(magnitude);
  if (digits.size() <= 4) return (v < 0 ? "-" : "") + digits;
  std::string out;
  const std::size_t lead = digits.size() % 3;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (i - lead) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (v < 0 ? "-" : "") + out;
}

}  // namespace

std::string format_number(double value, int significant) {
  if (!std::isfinite(value)) return non_finite(value);
  significant = std::clamp(significant, 1, 17);
  if (value == 0.0) return "0";
  const double mag = std::fabs(value);
  const int exponent = static_cast<int>(std::floor(std::log10(mag)));
  if (exponent < -3 || exponent >= 7) {
    return tidy_exponent(trim_fraction(fmt::format("{:.{}e}", value, significant - 1)));
  }
  const int decimals = std::max(0, significant - 1 - exponent);
  std::string s = trim_fraction(fmt::format("{:.{}f}", value, decimals));
  if (s == "-0") s = "0";
  return s;
}

std::string format_fixed(double value, int decimals) {
  if (!std::isfinite(value)) return non_finite(value);
  std::string s = fmt::format("{:.{}f}", value, std::clamp(decimals, 0, 17));
  if (s.find_first_not_of("-0.") == std::string::npos && s[0] == '-') s.erase(0, 1);
  return s;
}

std::string format_exact(double value) {
  if (std::isnan(value)) return "nan";
  return fmt::format("{}", value);
}

Cell Cell::number(double value, int significant) {
  Cell c(value);
  c.style_ = Style::Significant;
  c.digits_ = significant;
  return c;
}

Cell Cell::fixed(double value, int decimals) {
  Cell c(value);
  c.style_ = Style::Fixed;
  c.digits_ = decimals;
  return c;
}

Cell Cell::percent(double fraction, int decimals) {
  Cell c(fraction);
  c.style_ = Style::Percent;
  c.digits_ = decimals;
  return c;
}

std::string Cell::display() const {
  switch (kind_) {
    case Kind::Empty: return "";
    case Kind::Text: return text_;
    case Kind::Integer: return group_thousands(integer_);
    case Kind::Real:
      switch (style_) {
        case Style::Significant: return format_number(real_, digits_);
        case Style::Fixed: return format_fixed(real_, digits_);
        case Style::Percent:
          return std::isfinite(real_) ? format_fixed(real_ * 100.0, digits_) + "%" : non_finite(real_);
      }
  }
  return "";
}

std::string Cell::raw() const {
  switch (kind_) {
    case Kind::Empty: return "";
    case Kind::Text: return text_;
    case Kind::Integer: return std::to_string(integer_);
    case Kind::Real: return format_exact(real_);
  }
  return "";
}

}  // namespace deltaedit::report
