#include "io/convert.h"

#include <algorithm>
#include <cmath>

#include "util/clones.h"
#include "util/error.h"

// The block kernels below use GCC/Clang vector extensions: each lane does exactly what the scalar
// conversion does, so results are bit-identical to bf16_to_f32/f32_to_bf16/f16_to_f32 (the
// exhaustive tests check every input). An AVX2 clone is picked at load time where available.
#define DELTAEDIT_KERNEL DELTAEDIT_CLONES

namespace deltaedit::io {
namespace {

constexpr size_t kBlk = 16;  // elements per vector block
constexpr size_t kVec = 8;   // elements per vector (one AVX2 register of 32-bit lanes)
typedef uint16_t v8h __attribute__((vector_size(16)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v8f __attribute__((vector_size(32)));

DELTAEDIT_KERNEL void bf16_block_to_f32(const unsigned char* __restrict p, float* __restrict out, size_t blocks) {
  for (size_t k = 0; k < blocks * (kBlk / kVec); ++k) {
    v8h h;
    std::memcpy(&h, p + k * kVec * 2, sizeof h);
    const v8u b = __builtin_convertvector(h, v8u) << 16;
    std::memcpy(out + k * kVec, &b, sizeof b);
  }
}

DELTAEDIT_KERNEL void bf16_block_delta(const unsigned char* __restrict b, const unsigned char* __restrict p,
                                       float* __restrict out, size_t blocks) {
  for (size_t k = 0; k < blocks * (kBlk / kVec); ++k) {
    v8h hb, hp;
    std::memcpy(&hb, b + k * kVec * 2, sizeof hb);
    std::memcpy(&hp, p + k * kVec * 2, sizeof hp);
    const v8u ub = __builtin_convertvector(hb, v8u) << 16, up = __builtin_convertvector(hp, v8u) << 16;
    const v8f d = (v8f)up - (v8f)ub;
    std::memcpy(out + k * kVec, &d, sizeof d);
  }
}

DELTAEDIT_KERNEL void f16_block_to_f32(const unsigned char* __restrict p, float* __restrict out, size_t blocks) {
  for (size_t k = 0; k < blocks * (kBlk / kVec); ++k) {
    v8h h;
    std::memcpy(&h, p + k * kVec * 2, sizeof h);
    const v8u x = __builtin_convertvector(h, v8u);
    const v8u sign = (x & 0x8000u) << 16;
    const v8u em = x & 0x7FFFu;
    const v8u exp = em >> 10, man = em & 0x3FFu;
    const v8u normal = (em << 13) + (uint32_t(127 - 15) << 23);
    const v8u special = 0x7F800000u | (man << 13);
    // A subnormal (or zero) is man·2^-24: exact in f32, and the product is exact too.
    const v8f subf = __builtin_convertvector((v8i)man, v8f) * 0x1.0p-24f;
    const v8u sub = (v8u)subf;
    const v8u is_sub = (v8u)(exp == 0u), is_special = (v8u)(exp == 0x1Fu);
    const v8u body = (sub & is_sub) | (special & is_special) | (normal & ~(is_sub | is_special));
    const v8u bits = sign | body;
    std::memcpy(out + k * kVec, &bits, sizeof bits);
  }
}

// Narrows whole blocks; returns whether any element needs NarrowStats accounting (non-finite
// input, or a result of ±Inf or ±0), so the caller can account that block element by element.
DELTAEDIT_KERNEL bool f32_block_to_bf16(const float* __restrict src, unsigned char* __restrict p, size_t blocks) {
  v8i flag = {};
  for (size_t k = 0; k < blocks * (kBlk / kVec); ++k) {
    v8u b;
    std::memcpy(&b, src + k * kVec, sizeof b);
    const v8i a = (v8i)(b & 0x7FFFFFFFu);
    const v8u rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
    const v8u nan = ((b >> 16) & 0x8000u) | 0x7FC0u;
    const v8u is_nan = (v8u)(a > 0x7F800000);
    const v8u h = (nan & is_nan) | (rounded & ~is_nan);
    const v8h hh = __builtin_convertvector(h, v8h);
    std::memcpy(p + k * kVec * 2, &hh, sizeof hh);
    const v8i ha = (v8i)(h & 0x7FFFu);
    flag |= (a >= 0x7F800000) | (ha == 0x7F80) | (ha == 0);
  }
  int32_t any = 0;
  for (size_t j = 0; j < kVec; ++j) any |= flag[j];
  return any != 0;
}

// Whether any of the floats is NaN or ±Inf.
DELTAEDIT_KERNEL bool any_nonfinite(const float* __restrict src, size_t blocks) {
  v8i flag = {};
  for (size_t k = 0; k < blocks * (kBlk / kVec); ++k) {
    v8u b;
    std::memcpy(&b, src + k * kVec, sizeof b);
    flag |= (v8i)(b & 0x7FFFFFFFu) >= 0x7F800000;
  }
  int32_t any = 0;
  for (size_t j = 0; j < kVec; ++j) any |= flag[j];
  return any != 0;
}

}  // namespace

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

void bf16_delta_to_f32(std::span<const std::byte> base, std::span<const std::byte> post, std::span<float> out) {
  const size_t n = out.size();
  const auto* b = reinterpret_cast<const unsigned char*>(base.data());
  const auto* p = reinterpret_cast<const unsigned char*>(post.data());
  const size_t body = n / kBlk * kBlk;
  bf16_block_delta(b, p, out.data(), n / kBlk);
  for (size_t i = body; i < n; ++i) {
    uint16_t hb, hp;
    std::memcpy(&hb, b + 2 * i, 2);
    std::memcpy(&hp, p + 2 * i, 2);
    out[i] = bf16_to_f32(hp) - bf16_to_f32(hb);
  }
}

void to_f32(std::span<const std::byte> src, DType dtype, std::span<float> out) {
  const size_t n = out.size();
  const auto* p = reinterpret_cast<const unsigned char*>(src.data());
  switch (dtype) {
    case DType::F32:
      if (n) std::memcpy(out.data(), p, n * 4);
      return;
    case DType::BF16: {
      const size_t body = n / kBlk * kBlk;
      bf16_block_to_f32(p, out.data(), n / kBlk);
      for (size_t i = body; i < n; ++i) {
        uint16_t h; std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    }
    case DType::F16: {
      const size_t body = n / kBlk * kBlk;
      f16_block_to_f32(p, out.data(), n / kBlk);
      for (size_t i = body; i < n; ++i) {
        uint16_t h; std::memcpy(&h, p + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      return;
    }
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
    case DType::F32: {
      if (n) std::memcpy(p, src.data(), n * 4);
      // Only NaN and ±Inf count when nothing is narrowed; scan in blocks, account the rare ones.
      constexpr size_t kScan = 64 * kBlk;
      for (size_t off = 0; off < n; off += kScan) {
        const size_t m = std::min(kScan, n - off);
        if (m == kScan && !any_nonfinite(src.data() + off, m / kBlk)) continue;
        for (size_t i = off; i < off + m; ++i) account(src[i], src[i], s);
      }
      return s;
    }
    case DType::BF16: {
      const auto slow = [&](size_t i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
        if (!std::isfinite(src[i]) || (h & 0x7FFFu) == 0x7F80u || (h & 0x7FFFu) == 0)
          account(src[i], bf16_to_f32(h), s);
      };
      // Blocks of 4 vectors: narrowed at once; a block with a special value is redone one by one.
      constexpr size_t kGroup = 4 * kBlk;
      size_t i = 0;
      for (; i + kGroup <= n; i += kGroup) {
        if (f32_block_to_bf16(src.data() + i, p + 2 * i, kGroup / kBlk))
          for (size_t j = i; j < i + kGroup; ++j) slow(j);
      }
      for (; i < n; ++i) slow(i);
      return s;
    }
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
