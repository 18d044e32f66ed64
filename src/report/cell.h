// Table cells shared by the HTML and CSV writers: text or a number that keeps
// its full value (CSV) and knows how to show itself to a reader (HTML).
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace deltaedit::report {

// A number for people: `significant` significant digits, trailing zeros
// trimmed, scientific notation for very small or very large magnitudes.
// NaN prints as "NaN", infinities as "inf" / "-inf", -0 as "0".
std::string format_number(double value, int significant = 4);

// Fixed number of decimals (no trimming); same handling of NaN and infinities.
std::string format_fixed(double value, int decimals);

// Shortest text that reads back to exactly `value` ("0.1", "1e-05", "nan").
std::string format_exact(double value);

class Cell {
 public:
  enum class Kind { Empty, Text, Real, Integer };

  Cell() = default;
  Cell(std::string text) : kind_(Kind::Text), text_(std::move(text)) {}
  Cell(const char* text) : kind_(Kind::Text), text_(text ? text : "") {}
  Cell(std::string_view text) : kind_(Kind::Text), text_(text) {}
  Cell(bool value) : kind_(Kind::Text), text_(value ? "true" : "false") {}
  template <std::floating_point T>
  Cell(T value) : kind_(Kind::Real), real_(static_cast<double>(value)) {}
  template <std::integral T>
    requires(!std::same_as<T, bool> && !std::same_as<T, char>)
  Cell(T value) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
      if (value > static_cast<T>(INT64_MAX)) {
        kind_ = Kind::Text;
        text_ = std::to_string(value);
        return;
      }
    }
    kind_ = Kind::Integer;
    integer_ = static_cast<std::int64_t>(value);
  }

  // A real shown with `significant` significant digits (CSV keeps the full value).
  static Cell number(double value, int significant);
  // A real shown with exactly `decimals` decimals.
  static Cell fixed(double value, int decimals);
  // A fraction shown as a percentage, e.g. 0.754 -> "75.4%" (CSV keeps 0.754).
  static Cell percent(double fraction, int decimals = 1);

  Kind kind() const { return kind_; }
  bool is_number() const { return kind_ == Kind::Real || kind_ == Kind::Integer; }
  double real() const { return kind_ == Kind::Integer ? static_cast<double>(integer_) : real_; }

  // What a reader sees (not yet escaped for HTML).
  std::string display() const;
  // The exact value, for machine-readable output (not yet quoted for CSV).
  std::string raw() const;

 private:
  enum class Style { Significant, Fixed, Percent };
  Kind kind_ = Kind::Empty;
  std::string text_;
  double real_ = 0.0;
  std::int64_t integer_ = 0;
  Style style_ = Style::Significant;
  int digits_ = 4;
};

}  // namespace deltaedit::report
