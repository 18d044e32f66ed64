// Conversions between the compute dtypes and f32. Narrowing rounds to nearest-even on the bit
// pattern, NaN becomes the canonical quiet NaN, overflow goes to ±Inf (RELIABILITY.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "io/dtype.h"

namespace deltaedit::io {

inline float bits_to_f32(uint32_t b) { float f; std::memcpy(&f, &b, 4); return f; }
inline uint32_t f32_to_bits(float f) { uint32_t b; std::memcpy(&b, &f, 4); return b; }

// bf16 -> f32 is exact.
inline float bf16_to_f32(uint16_t h) { return bits_to_f32(uint32_t(h) << 16); }
// f32 -> bf16, round to nearest, ties to even; NaN -> 0x7FC0 (sign kept); overflow -> ±Inf.
inline uint16_t f32_to_bf16(float f) {
  uint32_t b = f32_to_bits(f);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t(((b >> 16) & 0x8000u) | 0x7FC0u);
  uint32_t lsb = (b >> 16) & 1u;
  b += 0x7FFFu + lsb;
  return uint16_t(b >> 16);
}

float f16_to_f32(uint16_t h);
// f32 -> IEEE binary16, round to nearest even; NaN -> 0x7E00 (sign kept); |x| > 65504 rounds to ±Inf.
uint16_t f32_to_f16(float f);

// Counts of what narrowing did, so it can be reported rather than silent.
struct NarrowStats {
  uint64_t nan = 0;        // NaN inputs
  uint64_t inf = 0;        // Inf inputs
  uint64_t overflow = 0;   // finite inputs that became ±Inf
  uint64_t underflow = 0;  // nonzero finite inputs that became ±0
};

// Decode `n` elements of a compute dtype (F16/BF16/F32/F64) into f32. Source need not be aligned.
void to_f32(std::span<const std::byte> src, DType dtype, std::span<float> out);
// out[i] = to_f32(post)[i] − to_f32(base)[i] for two BF16 inputs of out.size() values, decoded in
// registers (the same f32 subtraction, so the same bits as decoding first).
void bf16_delta_to_f32(std::span<const std::byte> base, std::span<const std::byte> post, std::span<float> out);
// Encode f32 values into a compute dtype; returns what was lost on the way.
NarrowStats from_f32(std::span<const float> src, DType dtype, std::span<std::byte> out);

}  // namespace deltaedit::io
