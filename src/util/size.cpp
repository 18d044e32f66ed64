#include "util/size.h"

#include <cctype>
#include <charconv>
#include <string>

#include "util/error.h"

namespace deltaedit::util {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

[[noreturn]] void bad(std::string_view text, const std::string& why) {
  throw Error(ErrorKind::Usage, "'" + std::string(text) + "' " + why);
}

}  // namespace

uint64_t parse_size(std::string_view text) {
  const char* const begin = text.data();
  const char* const end = begin + text.size();
  const std::string form = "is not a size: write a number and a unit, e.g. 5GB, 500MB, 1.5GiB";
  const char* p = begin;
  while (p < end && std::isdigit(static_cast<unsigned char>(*p))) ++p;
  if (p == begin) bad(text, form);  // "", ".", "-1GB", "+1", "GB"
  uint64_t whole = 0;
  auto [q, ec] = std::from_chars(begin, p, whole);
  if (ec == std::errc::result_out_of_range) bad(text, "is past 2^64 - 1 bytes");
  if (ec != std::errc() || q != p) bad(text, form);
  // The fraction: digits after one '.', kept exactly as frac / 10^k (at most 19 digits).
  uint64_t frac = 0, scale = 1;
  if (p < end && *p == '.') {
    const char* f = ++p;
    while (p < end && std::isdigit(static_cast<unsigned char>(*p))) ++p;
    if (p == f) bad(text, form);  // "5.GB"
    const char* last = p - f > 19 ? f + 19 : p;  // later digits are below any unit's resolution
    auto [r, ec2] = std::from_chars(f, last, frac);
    if (ec2 != std::errc() || r != last) bad(text, form);
    for (const char* c = f; c < last; ++c) scale *= 10;
  }
  const std::string_view unit(p, size_t(end - p));
  static constexpr struct {
    std::string_view name;
    uint64_t bytes;
  } kUnits[] = {{"", 1},
                {"B", 1},
                {"KB", 1000},
                {"MB", 1000000},
                {"GB", 1000000000},
                {"TB", 1000000000000},
                {"KiB", uint64_t(1) << 10},
                {"MiB", uint64_t(1) << 20},
                {"GiB", uint64_t(1) << 30},
                {"TiB", uint64_t(1) << 40}};
  uint64_t mult = 0;
  for (const auto& u : kUnits)
    if (iequals(unit, u.name)) mult = u.bytes;
  if (mult == 0) {
    if (unit.find_first_of(".0123456789") != std::string_view::npos) bad(text, form);  // "1.2.3GB"
    bad(text, "has an unknown unit '" + std::string(unit) + "' (use " + kSizeUnits + ")");
  }
  const unsigned __int128 bytes = static_cast<unsigned __int128>(whole) * mult +
                                  static_cast<unsigned __int128>(frac) * mult / scale;
  if (bytes > UINT64_MAX) bad(text, "is past 2^64 - 1 bytes");
  return static_cast<uint64_t>(bytes);
}

uint64_t parse_size_option(std::string_view flag, std::string_view text, uint64_t min) {
  uint64_t v = 0;
  try {
    v = parse_size(text);
  } catch (const Error& e) {
    throw Error(ErrorKind::Usage, std::string(flag) + ": " + e.detail());
  }
  if (v < min)
    throw Error(ErrorKind::Usage, std::string(flag) + ": '" + std::string(text) + "' is below the smallest size, " +
                                      std::to_string(min) + (min == 1 ? " byte" : " bytes"));
  return v;
}

}  // namespace deltaedit::util
