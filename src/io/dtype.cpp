#include "io/dtype.h"

#include <array>
#include <cctype>
#include <string>
#include <utility>

namespace deltaedit::io {
namespace {
struct Entry {
  DType d;
  std::string_view name;
  unsigned bits;
};
constexpr std::array<Entry, 22> kTable{{
    {DType::BOOL, "BOOL", 8},        {DType::U8, "U8", 8},
    {DType::I8, "I8", 8},            {DType::F8_E5M2, "F8_E5M2", 8},
    {DType::F8_E4M3, "F8_E4M3", 8},  {DType::F8_E8M0, "F8_E8M0", 8},
    {DType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8}, {DType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {DType::I16, "I16", 16},         {DType::U16, "U16", 16},
    {DType::F16, "F16", 16},         {DType::BF16, "BF16", 16},
    {DType::I32, "I32", 32},         {DType::U32, "U32", 32},
    {DType::F32, "F32", 32},         {DType::C64, "C64", 64},
    {DType::F64, "F64", 64},         {DType::I64, "I64", 64},
    {DType::U64, "U64", 64},         {DType::F4, "F4", 4},
    {DType::F6_E2M3, "F6_E2M3", 6},  {DType::F6_E3M2, "F6_E3M2", 6},
}};
}  // namespace

unsigned dtype_bits(DType d) { return kTable[static_cast<size_t>(d)].bits; }
std::string_view dtype_name(DType d) { return kTable[static_cast<size_t>(d)].name; }

std::optional<DType> parse_dtype(std::string_view s) {
  for (const auto& e : kTable)
    if (e.name == s) return e.d;
  return std::nullopt;
}

std::optional<DType> parse_compute_dtype(std::string_view s) {
  std::string lower(s);
  for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  static constexpr std::pair<std::string_view, DType> kAliases[] = {
      {"bf16", DType::BF16},   {"bfloat16", DType::BF16}, {"f16", DType::F16},     {"fp16", DType::F16},
      {"float16", DType::F16}, {"half", DType::F16},      {"f32", DType::F32},     {"fp32", DType::F32},
      {"float32", DType::F32}, {"float", DType::F32},     {"f64", DType::F64},     {"fp64", DType::F64},
      {"float64", DType::F64}, {"double", DType::F64},
  };
  for (const auto& [name, d] : kAliases)
    if (lower == name) return d;
  return std::nullopt;
}

bool is_compute_dtype(DType d) {
  return d == DType::F16 || d == DType::BF16 || d == DType::F32 || d == DType::F64;
}

bool is_float_dtype(DType d) {
  switch (d) {
    case DType::F8_E5M2: case DType::F8_E4M3: case DType::F8_E8M0: case DType::F8_E4M3FNUZ:
    case DType::F8_E5M2FNUZ: case DType::F16: case DType::BF16: case DType::F32: case DType::F64:
    case DType::F4: case DType::F6_E2M3: case DType::F6_E3M2:
      return true;
    default:
      return false;
  }
}

}  // namespace deltaedit::io
