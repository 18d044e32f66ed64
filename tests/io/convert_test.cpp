// f32 <-> bf16/f16 conversions: every one of the 2^32 f32 bit patterns against independent
// references, exact widening of every 16-bit pattern, the span kernels on unaligned memory and
// the narrowing statistics.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "io/convert.h"
#include "util/error.h"

using namespace deltaedit::io;
using deltaedit::Error;
using deltaedit::ErrorKind;

namespace {

float as_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t as_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

// 2^k as an exact double (|k| < 1023), built from its bit pattern so the sweep stays fast.
double pow2(int k) {
  const uint64_t b = uint64_t(1023 + k) << 52;
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}

// The f32 exponent E of a finite nonzero magnitude (subnormals report -127, which the callers
// clamp to the format's minimum exponent).
int f32_exponent(uint32_t bits) { return int((bits >> 23) & 0xFFu) - 127; }

// Rounds the magnitude |x| to a multiple of q = 2^qexp, to nearest with ties to the even multiple.
// Returns the multiple n (|x| ~ n * q). Everything is exact in double.
uint64_t round_to_multiple(double a, int qexp) {
  const double t = a * pow2(-qexp);  // exact: scaling by a power of two; 0 <= t < 2^12
  uint64_t n = uint64_t(t);           // truncation is floor for t >= 0
  const double frac = t - double(n);
  if (frac > 0.5 || (frac == 0.5 && (n & 1u))) ++n;
  return n;
}

// Reference f32 -> bf16: the nearer of the two neighbouring bf16 values (8 exponent bits, 7
// mantissa bits, subnormal quantum 2^-133), ties to even, computed in double; overflow rounds
// to the value 2^128, which encodes as Inf. NaN -> 0x7FC0 with the sign.
uint16_t ref_bf16(uint32_t bits) {
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const float f = as_float(bits);
  if (std::isnan(f)) return sign | 0x7FC0u;
  if (std::isinf(f)) return sign | 0x7F80u;
  const double a = std::fabs(double(f));
  if (a == 0.0) return sign;
  const int e = std::max(f32_exponent(bits), -126);  // exponent of the binade (clamped for subnormals)
  const uint64_t n = round_to_multiple(a, e - 7);   // n in [0, 256]
  // n * 2^(e-7) with n = 128 + m is exponent field e+127, mantissa m; n = 256 carries into the
  // next binade, and from e = 127 into the Inf encoding. In the subnormal band the same formula
  // gives the field n directly.
  return uint16_t(sign | ((uint32_t(e + 127) << 7) + uint32_t(n) - 128u));
}

// Reference f32 -> IEEE binary16 (5 exponent bits, 10 mantissa bits, subnormal quantum 2^-24),
// same method. NaN -> 0x7E00 with the sign.
uint16_t ref_f16(uint32_t bits) {
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const float f = as_float(bits);
  if (std::isnan(f)) return sign | 0x7E00u;
  if (std::isinf(f)) return sign | 0x7C00u;
  const double a = std::fabs(double(f));
  if (a >= 65536.0) return sign | 0x7C00u;   // at least 2^16: beyond the largest binade
  if (a <= pow2(-25)) return sign;            // at most half the smallest subnormal (ties to 0)
  const int e = std::max(f32_exponent(bits), -14);
  const uint64_t n = round_to_multiple(a, e - 10);  // n in [0, 2048]
  return uint16_t(sign | ((uint32_t(e + 15) << 10) + uint32_t(n) - 1024u));
}

// Exact values of the 16-bit formats from their definitions.
double bf16_value(uint16_t h) {
  const int e = (h >> 7) & 0xFF, m = h & 0x7F;
  if (e == 0xFF && m == 0) return (h & 0x8000u) ? -HUGE_VAL : HUGE_VAL;
  const double mag = e == 0 ? std::ldexp(double(m), -133) : std::ldexp(double(128 + m), e - 127 - 7);
  return (h & 0x8000u) ? -mag : mag;
}
double f16_value(uint16_t h) {
  const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
  const double mag = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 15 - 10);
  return (h & 0x8000u) ? -mag : mag;
}

TEST(ConvertReference, HandPickedValues) {
  // The references themselves, on values whose encodings are known.
  EXPECT_EQ(ref_bf16(as_bits(1.0f)), 0x3F80u);
  EXPECT_EQ(ref_bf16(as_bits(-2.0f)), 0xC000u);
  EXPECT_EQ(ref_bf16(0x3F808000u), 0x3F80u);  // tie, even stays
  EXPECT_EQ(ref_bf16(0x3F818000u), 0x3F82u);  // tie, odd rounds up
  EXPECT_EQ(ref_bf16(0x3F808001u), 0x3F81u);
  EXPECT_EQ(ref_bf16(0x7F7F7FFFu), 0x7F7Fu);  // largest finite
  EXPECT_EQ(ref_bf16(0x7F7F8000u), 0x7F80u);  // tie at the top goes to Inf
  EXPECT_EQ(ref_bf16(0x00008000u), 0x0000u);  // half the smallest subnormal: to zero
  EXPECT_EQ(ref_bf16(0x00008001u), 0x0001u);
  EXPECT_EQ(ref_bf16(0x00018000u), 0x0002u);
  EXPECT_EQ(ref_bf16(0x007FFFFFu), 0x0080u);  // largest f32 subnormal rounds to the smallest normal
  EXPECT_EQ(ref_bf16(0xFF800000u), 0xFF80u);
  EXPECT_EQ(ref_bf16(0xFFC00001u), 0xFFC0u);
  EXPECT_EQ(ref_bf16(0x7F800001u), 0x7FC0u);

  EXPECT_EQ(ref_f16(as_bits(1.0f)), 0x3C00u);
  EXPECT_EQ(ref_f16(as_bits(-2.0f)), 0xC000u);
  EXPECT_EQ(ref_f16(as_bits(65504.0f)), 0x7BFFu);
  EXPECT_EQ(ref_f16(as_bits(65519.99609375f)), 0x7BFFu);
  EXPECT_EQ(ref_f16(as_bits(65520.0f)), 0x7C00u);
  EXPECT_EQ(ref_f16(as_bits(std::ldexp(1.0f, -24))), 0x0001u);
  EXPECT_EQ(ref_f16(as_bits(std::ldexp(1.0f, -25))), 0x0000u);
  EXPECT_EQ(ref_f16(as_bits(std::ldexp(1.0f, -25) * 1.0000001f)), 0x0001u);
  EXPECT_EQ(ref_f16(as_bits(std::ldexp(3.0f, -25))), 0x0002u);  // 1.5 quanta: tie to even 2
  EXPECT_EQ(ref_f16(as_bits(std::ldexp(5.0f, -25))), 0x0002u);  // 2.5 quanta: tie to even 2
  EXPECT_EQ(ref_f16(as_bits(std::ldexp(1.0f, -14))), 0x0400u);
  EXPECT_EQ(ref_f16(as_bits(std::ldexp(1023.5f, -24))), 0x0400u);  // carries into the normals
  EXPECT_EQ(ref_f16(as_bits(1.0f + std::ldexp(1.0f, -11))), 0x3C00u);
  EXPECT_EQ(ref_f16(as_bits(1.0f + std::ldexp(3.0f, -11))), 0x3C02u);
  EXPECT_EQ(ref_f16(0x7FC00000u), 0x7E00u);
  EXPECT_EQ(ref_f16(0xFF800001u), 0xFE00u);
  EXPECT_EQ(ref_f16(0x00000001u), 0x0000u);
  EXPECT_EQ(ref_f16(0x80000001u), 0x8000u);
}

TEST(Convert, HandPickedValues) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80u);
  EXPECT_EQ(f32_to_bf16(as_float(0x3F808000u)), 0x3F80u);
  EXPECT_EQ(f32_to_bf16(as_float(0x3F818000u)), 0x3F82u);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7F80u);
  EXPECT_EQ(f32_to_bf16(-std::numeric_limits<float>::quiet_NaN()), 0xFFC0u);
  EXPECT_EQ(f32_to_bf16(as_float(0x7F800001u)), 0x7FC0u);  // signalling NaN: canonical, not Inf
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFFu);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00u);
  EXPECT_EQ(f32_to_f16(-65520.0f), 0xFC00u);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001u);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000u);
  EXPECT_EQ(f32_to_f16(as_float(0x7F800001u)), 0x7E00u);
  EXPECT_EQ(f32_to_f16(as_float(0xFFFFFFFFu)), 0xFE00u);
  EXPECT_EQ(f16_to_f32(0x7BFFu), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x0001u), std::ldexp(1.0f, -24));
  EXPECT_EQ(bf16_to_f32(0x3F80u), 1.0f);
}

// ---------------------------------------------------------------- the 2^32 sweep

struct SweepResult {
  uint64_t bad_bf16_scalar = 0, bad_bf16_kernel = 0, bad_f16_scalar = 0, bad_f16_kernel = 0;
  uint32_t first_bad_bf16 = 0, first_bad_f16 = 0;
  bool any_bad_bf16 = false, any_bad_f16 = false;
  NarrowStats bf16, f16;          // what from_f32 reported
  NarrowStats ref_bf16, ref_f16;  // what the references imply
};

void add(NarrowStats& a, const NarrowStats& b) {
  a.nan += b.nan;
  a.inf += b.inf;
  a.overflow += b.overflow;
  a.underflow += b.underflow;
}

void expect_stats(const NarrowStats& s, uint64_t nan, uint64_t inf, uint64_t overflow, uint64_t underflow) {
  EXPECT_EQ(s.nan, nan);
  EXPECT_EQ(s.inf, inf);
  EXPECT_EQ(s.overflow, overflow);
  EXPECT_EQ(s.underflow, underflow);
}

void tally_reference(float in, uint16_t out, bool is_f16, NarrowStats& s) {
  if (std::isnan(in)) { ++s.nan; return; }
  if (std::isinf(in)) { ++s.inf; return; }
  const uint16_t mag = out & 0x7FFFu;
  if (mag == (is_f16 ? 0x7C00u : 0x7F80u)) ++s.overflow;
  else if (mag == 0 && in != 0.0f) ++s.underflow;
}

// Chunks of 2^16 consecutive bit patterns; thread t takes chunks t, t+T, ...
void sweep_part(unsigned t, unsigned nthreads, SweepResult& r) {
  constexpr size_t kChunk = size_t(1) << 16;
  std::vector<float> in(kChunk);
  // Output one byte past an aligned start: the kernels must not assume alignment.
  std::vector<std::byte> out_bf16(2 * kChunk + 1), out_f16(2 * kChunk + 1);
  std::span<std::byte> kb(out_bf16.data() + 1, 2 * kChunk), kh(out_f16.data() + 1, 2 * kChunk);
  for (uint64_t c = t; c < (uint64_t(1) << 16); c += nthreads) {
    const uint32_t base = uint32_t(c << 16);
    for (size_t i = 0; i < kChunk; ++i) in[i] = as_float(base + uint32_t(i));
    add(r.bf16, from_f32(in, DType::BF16, kb));
    add(r.f16, from_f32(in, DType::F16, kh));
    for (size_t i = 0; i < kChunk; ++i) {
      const uint32_t bits = base + uint32_t(i);
      const uint16_t rb = ref_bf16(bits), rh = ref_f16(bits);
      tally_reference(in[i], rb, false, r.ref_bf16);
      tally_reference(in[i], rh, true, r.ref_f16);
      uint16_t kbv, khv;
      std::memcpy(&kbv, kb.data() + 2 * i, 2);
      std::memcpy(&khv, kh.data() + 2 * i, 2);
      const bool sb = f32_to_bf16(in[i]) != rb, vb = kbv != rb;
      const bool sh = f32_to_f16(in[i]) != rh, vh = khv != rh;
      r.bad_bf16_scalar += sb;
      r.bad_bf16_kernel += vb;
      r.bad_f16_scalar += sh;
      r.bad_f16_kernel += vh;
      if ((sb || vb) && !r.any_bad_bf16) { r.any_bad_bf16 = true; r.first_bad_bf16 = bits; }
      if ((sh || vh) && !r.any_bad_f16) { r.any_bad_f16 = true; r.first_bad_f16 = bits; }
    }
  }
}

// The 2^32 sweep is pure arithmetic: the Release build runs it; under the sanitizers' slowdown
// it would take most of an hour, so the sanitizer build checks the hand-picked and 16-bit cases.
#if defined(__SANITIZE_ADDRESS__)
#define DELTAEDIT_UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DELTAEDIT_UNDER_SANITIZER 1
#endif
#endif

TEST(ConvertSweep, AllF32BitPatternsNarrowExactlyAsTheReferences) {
#ifdef DELTAEDIT_UNDER_SANITIZER
  GTEST_SKIP() << "exhaustive sweep runs in the Release build (make test), not under sanitizers";
#endif
  const unsigned nthreads = std::max(2u, std::min(8u, std::thread::hardware_concurrency()));
  std::vector<SweepResult> parts(nthreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < nthreads; ++t) threads.emplace_back(sweep_part, t, nthreads, std::ref(parts[t]));
  for (auto& th : threads) th.join();

  SweepResult all;
  for (const auto& p : parts) {
    all.bad_bf16_scalar += p.bad_bf16_scalar;
    all.bad_bf16_kernel += p.bad_bf16_kernel;
    all.bad_f16_scalar += p.bad_f16_scalar;
    all.bad_f16_kernel += p.bad_f16_kernel;
    if (p.any_bad_bf16 && (!all.any_bad_bf16 || p.first_bad_bf16 < all.first_bad_bf16)) {
      all.any_bad_bf16 = true;
      all.first_bad_bf16 = p.first_bad_bf16;
    }
    if (p.any_bad_f16 && (!all.any_bad_f16 || p.first_bad_f16 < all.first_bad_f16)) {
      all.any_bad_f16 = true;
      all.first_bad_f16 = p.first_bad_f16;
    }
    add(all.bf16, p.bf16);
    add(all.f16, p.f16);
    add(all.ref_bf16, p.ref_bf16);
    add(all.ref_f16, p.ref_f16);
  }
  auto hex = [](uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08X", v);
    return std::string(buf);
  };
  EXPECT_EQ(all.bad_bf16_scalar, 0u) << "first f32 pattern: " << hex(all.first_bad_bf16) << " scalar "
                                     << f32_to_bf16(as_float(all.first_bad_bf16)) << " ref "
                                     << ref_bf16(all.first_bad_bf16);
  EXPECT_EQ(all.bad_bf16_kernel, 0u) << "first f32 pattern: " << hex(all.first_bad_bf16);
  EXPECT_EQ(all.bad_f16_scalar, 0u) << "first f32 pattern: " << hex(all.first_bad_f16) << " scalar "
                                    << f32_to_f16(as_float(all.first_bad_f16)) << " ref "
                                    << ref_f16(all.first_bad_f16);
  EXPECT_EQ(all.bad_f16_kernel, 0u) << "first f32 pattern: " << hex(all.first_bad_f16);

  // Counts over all patterns, from the formats' definitions:
  //   NaN: 2 * (2^23 - 1); Inf: 2;
  //   bf16 overflow: magnitudes 0x7F7F8000..0x7F7FFFFF; underflow: 0x00000001..0x00008000;
  //   f16 overflow: magnitudes from 65520 (0x477FF000) up; underflow: up to 2^-25 (0x33000000).
  const uint64_t nan = 2 * ((uint64_t(1) << 23) - 1);
  {
    SCOPED_TRACE("bf16 reference");
    expect_stats(all.ref_bf16, nan, 2, 2 * 0x8000ull, 2 * 0x8000ull);
  }
  {
    SCOPED_TRACE("bf16 from_f32");
    expect_stats(all.bf16, nan, 2, 2 * 0x8000ull, 2 * 0x8000ull);
  }
  {
    SCOPED_TRACE("f16 reference");
    expect_stats(all.ref_f16, nan, 2, 2 * (0x7F7FFFFFull - 0x477FF000ull + 1), 2 * 0x33000000ull);
  }
  {
    SCOPED_TRACE("f16 from_f32");
    expect_stats(all.f16, nan, 2, 2 * (0x7F7FFFFFull - 0x477FF000ull + 1), 2 * 0x33000000ull);
  }
}

#if defined(__FLT16_MANT_DIG__) && __FLT16_MANT_DIG__ == 11
// The compiler's _Float16 conversion (IEEE round to nearest even, in software on x86-64) is a
// second, independent f16 reference. It is slow, so it covers every pattern of the binades where
// rounding is delicate (the tie to zero, the largest subnormals, the first normals, the top binade
// with the tie to Inf) plus a stride through all 2^32 patterns, both signs. NaN payloads are ours to define, so
// NaN is checked separately against the canonical rule.
uint16_t compiler_f16(uint32_t bits) {
  const _Float16 h = static_cast<_Float16>(as_float(bits));
  uint16_t r;
  std::memcpy(&r, &h, 2);
  return r;
}

TEST(ConvertSweep, F16AgreesWithCompilerFloat16) {
  const std::vector<uint32_t> exps = {102, 112, 113, 142};
  auto check_range = [](uint32_t lo, uint64_t count, uint64_t stride, uint64_t& bad, uint32_t& first) {
    for (uint64_t i = 0; i < count; i += stride) {
      const uint32_t bits = uint32_t(lo + i);
      if (std::isnan(as_float(bits))) continue;
      const uint16_t c = compiler_f16(bits);
      if (f32_to_f16(as_float(bits)) != c || ref_f16(bits) != c) {
        if (!bad) first = bits;
        ++bad;
      }
    }
  };
  std::vector<uint64_t> bad(exps.size() + 1, 0);
  std::vector<uint32_t> first(exps.size() + 1, 0);
  std::vector<std::thread> threads;
  for (size_t k = 0; k < exps.size(); ++k) {
    // Every mantissa of the binade (the sign is covered by the stride below).
    threads.emplace_back([&, k] { check_range(exps[k] << 23, uint64_t(1) << 23, 1, bad[k], first[k]); });
    if (threads.size() == 2) {
      for (auto& th : threads) th.join();
      threads.clear();
    }
  }
  for (auto& th : threads) th.join();
  check_range(0, uint64_t(1) << 32, 509, bad.back(), first.back());
  for (size_t k = 0; k < bad.size(); ++k)
    EXPECT_EQ(bad[k], 0u) << "first disagreement at f32 pattern 0x" << std::hex << first[k];
}
#endif

// ---------------------------------------------------------------- widening and round trips

TEST(Convert, EveryBf16WidensExactlyAndRoundTrips) {
  std::vector<std::byte> src(2 * 65536 + 3);
  std::vector<float> wide(65536);
  std::vector<std::byte> back(2 * 65536 + 1);
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t v = uint16_t(h);
    std::memcpy(src.data() + 3 + 2 * h, &v, 2);
    const float f = bf16_to_f32(v);
    ASSERT_EQ(as_bits(f), h << 16) << h;  // a shift, NaN payloads included
    const bool nan = (v & 0x7FFFu) > 0x7F80u;
    if (!nan) {
      EXPECT_EQ(double(f), bf16_value(v)) << h;
      EXPECT_EQ(f32_to_bf16(f), v) << h;
    } else {
      EXPECT_EQ(f32_to_bf16(f), uint16_t((v & 0x8000u) | 0x7FC0u)) << h;
    }
  }
  // The span kernels, from and to unaligned memory.
  to_f32(std::span(src.data() + 3, 2 * 65536), DType::BF16, wide);
  for (uint32_t h = 0; h < 65536; ++h) ASSERT_EQ(as_bits(wide[h]), h << 16) << h;
  const NarrowStats s = from_f32(wide, DType::BF16, std::span(back.data() + 1, 2 * 65536));
  for (uint32_t h = 0; h < 65536; ++h) {
    uint16_t v;
    std::memcpy(&v, back.data() + 1 + 2 * h, 2);
    const bool nan = (h & 0x7FFFu) > 0x7F80u;
    ASSERT_EQ(v, nan ? uint16_t((h & 0x8000u) | 0x7FC0u) : uint16_t(h)) << h;
  }
  // 2 * (2^7 - 1) NaN patterns, two infinities, nothing lost.
  expect_stats(s, 2 * 127, 2, 0, 0);
}

// Δ of two BF16 inputs in registers: the f32 difference of the widened values, bit for bit, for
// every post pattern against three base patterns each (itself, a scrambled one, and ±0/±Inf/NaN
// in turn), from unaligned memory, with a tail shorter than a vector block.
TEST(Convert, Bf16DeltaIsTheDifferenceOfTheWidenedValues) {
  const size_t n = 3 * 65536 + 5;
  std::vector<std::byte> b(2 * n + 1), p(2 * n + 3);
  std::vector<uint16_t> hb(n), hp(n);
  const uint16_t specials[] = {0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC1};
  for (size_t i = 0; i < n; ++i) {
    hp[i] = uint16_t(i % 65536);
    const size_t kind = i / 65536;
    hb[i] = kind == 0 ? hp[i] : kind == 1 ? uint16_t((i * 40503u + 7u) % 65536u) : specials[i % 5];
    std::memcpy(b.data() + 1 + 2 * i, &hb[i], 2);
    std::memcpy(p.data() + 3 + 2 * i, &hp[i], 2);
  }
  std::vector<float> d(n);
  bf16_delta_to_f32(std::span(b.data() + 1, 2 * n), std::span(p.data() + 3, 2 * n), d);
  for (size_t i = 0; i < n; ++i) {
    const float want = bf16_to_f32(hp[i]) - bf16_to_f32(hb[i]);
    if (std::isnan(want))
      ASSERT_TRUE(std::isnan(d[i])) << i;
    else
      ASSERT_EQ(as_bits(d[i]), as_bits(want)) << i << " " << hp[i] << " " << hb[i];
  }
}

TEST(Convert, EveryF16WidensExactlyAndRoundTrips) {
  std::vector<std::byte> src(2 * 65536 + 1);
  std::vector<float> wide(65536);
  std::vector<std::byte> back(2 * 65536 + 5);
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t v = uint16_t(h);
    std::memcpy(src.data() + 1 + 2 * h, &v, 2);
    const float f = f16_to_f32(v);
    const bool nan = (v & 0x7FFFu) > 0x7C00u;
    if ((v & 0x7FFFu) == 0x7C00u) {
      EXPECT_TRUE(std::isinf(f)) << h;
      EXPECT_EQ(std::signbit(f), bool(v & 0x8000u)) << h;
    } else if (nan) {
      EXPECT_TRUE(std::isnan(f)) << h;
      EXPECT_EQ(std::signbit(f), bool(v & 0x8000u)) << h;
    } else {
      EXPECT_EQ(double(f), f16_value(v)) << h;
      EXPECT_EQ(std::signbit(f), bool(v & 0x8000u)) << h;  // -0 stays -0
    }
#if defined(__FLT16_MANT_DIG__) && __FLT16_MANT_DIG__ == 11
    if (!nan) {
      _Float16 c;
      std::memcpy(&c, &v, 2);
      EXPECT_EQ(as_bits(f), as_bits(static_cast<float>(c))) << h;
    }
#endif
    EXPECT_EQ(f32_to_f16(f), nan ? uint16_t((v & 0x8000u) | 0x7E00u) : v) << h;
  }
  to_f32(std::span(src.data() + 1, 2 * 65536), DType::F16, wide);
  for (uint32_t h = 0; h < 65536; ++h) ASSERT_EQ(as_bits(wide[h]), as_bits(f16_to_f32(uint16_t(h)))) << h;
  const NarrowStats s = from_f32(wide, DType::F16, std::span(back.data() + 5, 2 * 65536));
  for (uint32_t h = 0; h < 65536; ++h) {
    uint16_t v;
    std::memcpy(&v, back.data() + 5 + 2 * h, 2);
    const bool nan = (h & 0x7FFFu) > 0x7C00u;
    ASSERT_EQ(v, nan ? uint16_t((h & 0x8000u) | 0x7E00u) : uint16_t(h)) << h;
  }
  // 2 * (2^10 - 1) NaN patterns, two infinities, nothing lost (subnormals survive).
  expect_stats(s, 2 * 1023, 2, 0, 0);
}

// ---------------------------------------------------------------- span kernels

TEST(Convert, SpansOnUnalignedMemory) {
  const std::vector<float> values = {0.0f, -0.0f, 1.0f, -1.5f, 3.14159265f, 1e-3f, -65504.0f, 1e20f,
                                     std::ldexp(1.0f, -20), 7.0f, 0.1f};
  const size_t n = values.size();
  for (size_t off = 0; off < 8; ++off) {
    SCOPED_TRACE(off);
    // F32: byte copy both ways.
    {
      std::vector<std::byte> buf(4 * n + off);
      from_f32(values, DType::F32, std::span(buf.data() + off, 4 * n));
      std::vector<float> out(n);
      to_f32(std::span(buf.data() + off, 4 * n), DType::F32, out);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(as_bits(out[i]), as_bits(values[i])) << i;
      float first;
      std::memcpy(&first, buf.data() + off, 4);
      EXPECT_EQ(as_bits(first), as_bits(values[0]));
    }
    // F64: the bytes are the exact doubles; decoding rounds them back to the same floats.
    {
      std::vector<std::byte> buf(8 * n + off);
      from_f32(values, DType::F64, std::span(buf.data() + off, 8 * n));
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, buf.data() + off + 8 * i, 8);
        EXPECT_EQ(d, double(values[i])) << i;
      }
      std::vector<float> out(n);
      to_f32(std::span(buf.data() + off, 8 * n), DType::F64, out);
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(as_bits(out[i]), as_bits(values[i])) << i;
    }
    // BF16 and F16: element by element equal to the scalar conversions.
    for (DType d : {DType::BF16, DType::F16}) {
      std::vector<std::byte> buf(2 * n + off);
      from_f32(values, d, std::span(buf.data() + off, 2 * n));
      std::vector<float> out(n);
      to_f32(std::span(buf.data() + off, 2 * n), d, out);
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, buf.data() + off + 2 * i, 2);
        const uint16_t want = d == DType::BF16 ? ref_bf16(as_bits(values[i])) : ref_f16(as_bits(values[i]));
        EXPECT_EQ(h, want) << i;
        EXPECT_EQ(as_bits(out[i]), as_bits(d == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h))) << i;
      }
    }
  }
  // F64 inputs beyond f32 range narrow to Inf, NaN stays NaN.
  const double d[3] = {1e300, -1e300, std::numeric_limits<double>::quiet_NaN()};
  std::vector<std::byte> buf(24 + 1);
  std::memcpy(buf.data() + 1, d, 24);
  std::vector<float> out(3);
  to_f32(std::span(buf.data() + 1, 24), DType::F64, out);
  EXPECT_TRUE(std::isinf(out[0]) && out[0] > 0);
  EXPECT_TRUE(std::isinf(out[1]) && out[1] < 0);
  EXPECT_TRUE(std::isnan(out[2]));
}

TEST(Convert, EmptySpans) {
  std::vector<float> none;
  for (DType d : {DType::F32, DType::F64, DType::BF16, DType::F16}) {
    to_f32({}, d, none);
    const NarrowStats s = from_f32(none, d, {});
    expect_stats(s, 0, 0, 0, 0);
  }
}

TEST(Convert, NonComputeDtypesAreRefused) {
  std::vector<std::byte> buf(64);
  std::vector<float> out(4);
  for (DType d : {DType::I32, DType::U8, DType::I64, DType::BOOL, DType::F8_E4M3, DType::F4, DType::C64}) {
    SCOPED_TRACE(std::string(dtype_name(d)));
    try {
      to_f32(buf, d, out);
      ADD_FAILURE() << "to_f32 accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
    }
    try {
      from_f32(out, d, buf);
      ADD_FAILURE() << "from_f32 accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
    }
  }
}

// ---------------------------------------------------------------- statistics

TEST(Convert, NarrowStatsCountWhatWasLost) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> v = {
      0.0f, -0.0f, 1.0f,                              // nothing lost
      65504.0f, 65519.99609375f,                      // largest f16, and the value just below the tie
      65520.0f, -65520.0f, 1e30f,                     // f16 overflow
      std::numeric_limits<float>::max(),              // f16 and bf16 overflow
      inf, -inf, nan, -nan,                           // not counted as overflow
      std::ldexp(1.0f, -24),                          // smallest f16 subnormal: kept
      std::ldexp(1.0f, -25), 1e-10f, -1e-10f,         // f16 underflow
      std::numeric_limits<float>::denorm_min(),       // underflow in both
      -std::ldexp(1.0f, -134),                        // bf16 tie at half its smallest subnormal: underflow
      std::ldexp(1.0f, -133),                         // smallest bf16 subnormal: kept
  };
  std::vector<std::byte> out(2 * v.size());
  {
    SCOPED_TRACE("f16");
    expect_stats(from_f32(v, DType::F16, out), 2, 2, 4, 6);
  }
  {
    SCOPED_TRACE("bf16");
    expect_stats(from_f32(v, DType::BF16, out), 2, 2, 1, 2);
  }
  std::vector<std::byte> wide(8 * v.size());
  {
    SCOPED_TRACE("f32");
    expect_stats(from_f32(v, DType::F32, std::span(wide.data(), 4 * v.size())), 2, 2, 0, 0);
  }
  {
    SCOPED_TRACE("f64");
    expect_stats(from_f32(v, DType::F64, wide), 2, 2, 0, 0);
  }
}

}  // namespace
