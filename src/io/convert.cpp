#include "io/convert.h"

#include <cmath>

#include "util/error.h"

namespace deltaedit::io {

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
      bits = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3FFu) << 13);
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  return bits_to_f32(bits);
}

uint16_t f32_to_f16(float f) {
  uint32_t b = f32_to_bits(f);
  uint16_t sign = uint16_t((b >> 16) & 0x8000u);
  uint32_t absb = b & 0x7FFFFFFFu;
  if (absb > 0x7F800000u) return sign | 0x7E00u;   // NaN
  if (absb == 0x7F800000u) return sign | 0x7C00u;  // Inf
  int32_t exp = int32_t(absb >> 23) - 127 + 15;
  uint32_t man = absb & 0x7FFFFFu;
  if (exp >= 0x1F) return sign | 0x7C00u;  // overflow (before rounding)
  if (exp <= 0) {
    // Subnormal or zero in f16: shift the full significand, round to nearest even.
    if (exp < -10) return sign;  // below half the smallest subnormal: rounds to zero
    man |= 0x800000u;
    uint32_t shift = uint32_t(14 - exp);  // 24-bit significand -> 10-bit subnormal field
    uint32_t q = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return uint16_t(sign | q);  // q may carry into the exponent field: that is correct
  }
  uint32_t q = (uint32_t(exp) << 10) | (man >> 13);
  uint32_t rem = man & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;  // may carry to Inf: correct
  return uint16_t(sign | q);
}

void to_f32(std::span<const std::byte> src, DType dtype, std::span<float> out) {
  const size_t n = out.size();
  const auto* p = reinterpret_cast<const unsigned char*>(src.data());
  switch (dtype) {
    case DType::F32:
      std::memcpy(out.data(), p, n * 4);
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h; std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h; std::memcpy(&h, p + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      return;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double d; std::memcpy(&d, p + 8 * i, 8);
        out[i] = static_cast<float>(d);
      }
      return;
    default:
      throw Error(ErrorKind::Unsupported,
                  std::string("cannot compute on dtype ") + std::string(dtype_name(dtype)) +
                      " (only F16, BF16, F32, F64); it passes through unchanged when not edited");
  }
}

namespace {
inline void account(float in, float back, NarrowStats& s) {
  if (std::isnan(in)) { ++s.nan; return; }
  if (std::isinf(in)) { ++s.inf; return; }
  if (std::isinf(back)) ++s.overflow;
  else if (back == 0.0f && in != 0.0f) ++s.underflow;
}
}  // namespace

NarrowStats from_f32(std::span<const float> src, DType dtype, std::span<std::byte> out) {
  NarrowStats s;
  const size_t n = src.size();
  auto* p = reinterpret_cast<unsigned char*>(out.data());
  switch (dtype) {
    case DType::F32:
      std::memcpy(p, src.data(), n * 4);
      for (float v : src) account(v, v, s);
      return s;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
        if (!std::isfinite(src[i]) || (h & 0x7FFFu) == 0x7F80u || (h & 0x7FFFu) == 0)
          account(src[i], bf16_to_f32(h), s);
      }
      return s;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h = f32_to_f16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
        if (!std::isfinite(src[i]) || (h & 0x7FFFu) == 0x7C00u || (h & 0x7FFFu) == 0)
          account(src[i], f16_to_f32(h), s);
      }
      return s;
    case DType::F64:
      for (size_t i = 0; i < n; ++i) {
        double d = src[i];
        std::memcpy(p + 8 * i, &d, 8);
        account(src[i], src[i], s);
      }
      return s;
    default:
      throw Error(ErrorKind::Unsupported, std::string("cannot write computed values as dtype ") +
                                              std::string(dtype_name(dtype)));
  }
}

}  // namespace deltaedit::io
