// safetensors dtypes: names, bit widths, and which ones deltaedit computes on.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace deltaedit::io {

enum class DType : uint8_t {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64, F4, F6_E2M3, F6_E3M2,
};

// Bits per element (4 and 6 for the sub-byte float formats).
unsigned dtype_bits(DType d);
std::string_view dtype_name(DType d);
std::optional<DType> parse_dtype(std::string_view s);
// A compute dtype as users type it, case-insensitively: the safetensors name (F32, BF16, F16,
// F64) or the torch/numpy spellings (bf16, bfloat16, fp16, float16, half, f32, fp32, float32,
// float, f64, fp64, float64, double). kComputeDtypeNames lists them for error messages.
std::optional<DType> parse_compute_dtype(std::string_view s);
inline constexpr std::string_view kComputeDtypeNames =
    "bf16/bfloat16, fp16/f16/float16/half, fp32/f32/float32/float, fp64/f64/float64/double (any case)";
// F16, BF16, F32, F64: the dtypes edits and statistics compute on (via f32).
bool is_compute_dtype(DType d);
// Floating formats of any width (used for "dtype class" matching of base and post).
bool is_float_dtype(DType d);

}  // namespace deltaedit::io
