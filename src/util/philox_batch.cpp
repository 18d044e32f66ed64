// Batched keyed Philox streams: the words of util::KeyedRng many counters at a time.
//
// The AVX2 kernels keep one Philox block in each 64-bit lane with its 32-bit word in the low
// half: _mm256_mul_epu32 reads exactly those halves, its 64-bit product holds (lo, hi) of the
// round's multiply, and a 64-bit shift brings hi down. High halves carry garbage that no low half
// ever depends on. Four groups of four blocks are in flight per step (sixteen counters), so the
// multiplier latency is hidden. Blocks of one step are laid out so that two groups interleave
// into eight consecutive counters: group 2q holds counters +0, +2, +4, +6 and group 2q+1 holds
// +1, +3, +5, +7 of the q-th eight, so one blend of the two puts their words in index order.
//
// The Bernoulli kernel draws lane 0, whose counter is (i_lo, i_hi, 0, 0): the first round's
// second product is 0·M1 and the second round's first product is one constant, and only words 0
// and 1 of the last round are needed. The selection test is the 53-bit integer comparison of
// KeyedRng::uniform_threshold, done as one 64-bit comparison of (w0 << 32 | w1) with T << 11.
// Integer arithmetic only: the same words and the same decisions as the scalar generator.
//
// The AVX-512 kernels are the same scheme on eight blocks a vector: four groups of eight (32
// counters a step), group 2q holding counters +0, +2, .., +14 of the q-th sixteen and group 2q+1
// the odd ones; the Bernoulli test is an unsigned 64-bit comparison into a mask register.
#include <algorithm>
#include <cstring>

#include "util/philox.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DELTAEDIT_PHILOX_AVX2 1
#include <immintrin.h>
#else
#define DELTAEDIT_PHILOX_AVX2 0
#endif

namespace deltaedit::util {
namespace {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

void blocks_generic(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint32_t* w0,
                    uint32_t* w1, uint32_t* w2, uint32_t* w3) noexcept {
  for (size_t j = 0; j < n; ++j) {
    const uint64_t i = first + j;
    const PhiloxCounter c =
        philox4x32_10({static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), lane, 0u}, key);
    w0[j] = c[0];
    w1[j] = c[1];
    if (w2) w2[j] = c[2];
    if (w3) w3[j] = c[3];
  }
}

void bernoulli_generic(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint64_t threshold,
                       uint32_t* sel) noexcept {
  for (size_t j = 0; j < n; ++j) {
    const uint64_t i = first + j;
    const PhiloxCounter c =
        philox4x32_10({static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), lane, 0u}, key);
    sel[j] = KeyedRng::uniform_bits(c[0], c[1]) < threshold ? ~0u : 0u;
  }
}

#if DELTAEDIT_PHILOX_AVX2
#define DE_AVX2 __attribute__((target("avx2")))

constexpr int kGroups = 4;             // groups of four blocks in flight
constexpr size_t kStep = 4 * kGroups;  // counters per step

struct RoundKeys {
  __m256i k0[10], k1[10];
};

DE_AVX2 inline RoundKeys round_keys(PhiloxKey key) {
  RoundKeys rk;
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    rk.k0[r] = _mm256_set1_epi64x(k0);
    rk.k1[r] = _mm256_set1_epi64x(k1);
  }
  return rk;
}

// Low counter words of group g of a step starting at counter word f (f + 15 does not wrap).
DE_AVX2 inline __m256i group_counters(uint32_t f, int g) {
  const uint32_t b = f + static_cast<uint32_t>((g / 2) * 8 + (g % 2));
  return _mm256_setr_epi64x(b, b + 2u, b + 4u, b + 6u);
}

// One Philox round on every group.
DE_AVX2 inline void round(__m256i (&c0)[kGroups], __m256i (&c1)[kGroups], __m256i (&c2)[kGroups],
                          __m256i (&c3)[kGroups], __m256i k0, __m256i k1) {
  const __m256i m0 = _mm256_set1_epi64x(kM0), m1 = _mm256_set1_epi64x(kM1);
  for (int g = 0; g < kGroups; ++g) {
    const __m256i p0 = _mm256_mul_epu32(c0[g], m0), p1 = _mm256_mul_epu32(c2[g], m1);
    c0[g] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c1[g]), k0);
    c2[g] = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), c3[g]), k1);
    c1[g] = p1;
    c3[g] = p0;
  }
}

// The low words of groups 2q and 2q+1 as eight 32-bit words in counter order.
DE_AVX2 inline __m256i interleave(__m256i even, __m256i odd) {
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

DE_AVX2 void blocks_avx2(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint32_t* w0,
                         uint32_t* w1, uint32_t* w2, uint32_t* w3) noexcept {
  const RoundKeys rk = round_keys(key);
  size_t j = 0;
  while (j + kStep <= n) {
    const uint64_t f = first + j;
    if (static_cast<uint32_t>(f) > 0xFFFFFFFFu - (kStep - 1))
      break;  // the high word changes inside the step
    __m256i c0[kGroups], c1[kGroups], c2[kGroups], c3[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      c0[g] = group_counters(static_cast<uint32_t>(f), g);
      c1[g] = _mm256_set1_epi64x(static_cast<uint32_t>(f >> 32));
      c2[g] = _mm256_set1_epi64x(lane);
      c3[g] = _mm256_setzero_si256();
    }
    for (int r = 0; r < 10; ++r) round(c0, c1, c2, c3, rk.k0[r], rk.k1[r]);
    for (int q = 0; q < kGroups / 2; ++q) {
      const size_t at = j + 8 * static_cast<size_t>(q);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + at),
                          interleave(c0[2 * q], c0[2 * q + 1]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + at),
                          interleave(c1[2 * q], c1[2 * q + 1]));
      if (w2)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2 + at),
                            interleave(c2[2 * q], c2[2 * q + 1]));
      if (w3)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3 + at),
                            interleave(c3[2 * q], c3[2 * q + 1]));
    }
    j += kStep;
  }
  if (j < n) {
    blocks_generic(key, first + j, lane, n - j, w0 + j, w1 + j, w2 ? w2 + j : nullptr,
                   w3 ? w3 + j : nullptr);
  }
}

// 0 < threshold < 2^53.
// Rounds 1 and 2 in closed form: the counter's words 1 and 2 (high index word, lane) and 3 (0)
// are the same for every block of a step, so with P = M1·lane, after round 1 c0 = hi(P) ^ hi ^
// k0 and c1 = lo(P) are scalars, and round 2's first product is one scalar multiply.
DE_AVX2 void bernoulli_avx2(PhiloxKey key, uint64_t first, uint32_t lane, size_t n,
                            uint64_t threshold, uint32_t* sel) noexcept {
  const RoundKeys rk = round_keys(key);
  const uint64_t pl = uint64_t{kM1} * lane;
  const __m256i k01 = _mm256_xor_si256(rk.k0[1], _mm256_set1_epi64x(static_cast<uint32_t>(pl)));
  const __m256i m0 = _mm256_set1_epi64x(kM0), m1 = _mm256_set1_epi64x(kM1);
  const __m256i flip = _mm256_set1_epi64x(static_cast<long long>(0x8000000000000000ull));
  // x >> 11 < T  ⇔  x < T·2^11 (T < 2^53), compared as signed after flipping the top bits.
  const __m256i limit =
      _mm256_set1_epi64x(static_cast<long long>((threshold << 11) ^ 0x8000000000000000ull));
  uint32_t key0[10];
  key0[0] = key[0];
  for (int r = 1; r < 10; ++r) key0[r] = key0[r - 1] + kW0;
  size_t j = 0;
  while (j + kStep <= n) {
    const uint64_t f = first + j;
    if (static_cast<uint32_t>(f) > 0xFFFFFFFFu - (kStep - 1)) break;
    const uint32_t hi = static_cast<uint32_t>(f >> 32);
    // Round 1 with c2 = c3 = 0: c0' = c1 ^ k0 (a constant), c1' = 0, c2' = hi(M0·c0) ^ k1, c3' =
    // lo(M0·c0). Round 2: M0·c0 is one constant product.
    const uint32_t c0r2 = static_cast<uint32_t>(pl >> 32) ^ hi ^ key0[0];
    const uint64_t p0r2 = uint64_t{kM0} * c0r2;
    const __m256i hi0r2 = _mm256_set1_epi64x(static_cast<uint32_t>(p0r2 >> 32));
    const __m256i lo0r2 = _mm256_set1_epi64x(static_cast<uint32_t>(p0r2));
    __m256i c0[kGroups], c1[kGroups], c2[kGroups], c3[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      const __m256i p0 = _mm256_mul_epu32(group_counters(static_cast<uint32_t>(f), g), m0);
      const __m256i c2r1 =
          _mm256_xor_si256(_mm256_srli_epi64(p0, 32), rk.k1[0]);  // c3 after round 1 is p0
      const __m256i p1 = _mm256_mul_epu32(c2r1, m1);
      c0[g] = _mm256_xor_si256(_mm256_srli_epi64(p1, 32), k01);  // c1 after round 1 is lo(P)
      c1[g] = p1;
      c2[g] = _mm256_xor_si256(_mm256_xor_si256(hi0r2, p0), rk.k1[1]);
      c3[g] = lo0r2;
    }
    for (int r = 2; r < 9; ++r) round(c0, c1, c2, c3, rk.k0[r], rk.k1[r]);
    __m256i mask[kGroups];
    for (int g = 0; g < kGroups; ++g) {
      // Round 10, words 0 and 1 only.
      const __m256i p1 = _mm256_mul_epu32(c2[g], m1);
      const __m256i w0 =
          _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), c1[g]), rk.k0[9]);
      const __m256i x = _mm256_blend_epi32(p1, _mm256_slli_epi64(w0, 32), 0xAA);  // w0:w1
      mask[g] = _mm256_cmpgt_epi64(limit, _mm256_xor_si256(x, flip));
    }
    for (int q = 0; q < kGroups / 2; ++q) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(sel + j + 8 * static_cast<size_t>(q)),
                          _mm256_blend_epi32(mask[2 * q], mask[2 * q + 1], 0xAA));
    }
    j += kStep;
  }
  if (j < n) bernoulli_generic(key, first + j, lane, n - j, threshold, sel + j);
}

// Function-local statics: callers may ask during static initialisation (benchmark registration),
// before this file's globals are set; __builtin_cpu_init makes the query safe that early.
bool have_avx2() noexcept {
  static const bool v = (__builtin_cpu_init(), __builtin_cpu_supports("avx2"));
  return v;
}
#undef DE_AVX2

#define DE_AVX512 __attribute__((target("avx512f")))
// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h for _mm512_set1_epi64 and friends
// (their "undefined" source operand); the values are fully defined.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

constexpr int kGroups512 = 4;                // groups of eight blocks in flight
constexpr size_t kStep512 = 8 * kGroups512;  // counters per step

struct RoundKeys512 {
  __m512i k0[10], k1[10];
};

DE_AVX512 inline RoundKeys512 round_keys512(PhiloxKey key) {
  RoundKeys512 rk;
  uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    rk.k0[r] = _mm512_set1_epi64(k0);
    rk.k1[r] = _mm512_set1_epi64(k1);
  }
  return rk;
}

// Low counter words of group g of a step starting at counter word f (f + 31 does not wrap).
DE_AVX512 inline __m512i group_counters512(uint32_t f, int g) {
  const uint32_t b = f + static_cast<uint32_t>((g / 2) * 16 + (g % 2));
  return _mm512_setr_epi64(b, b + 2u, b + 4u, b + 6u, b + 8u, b + 10u, b + 12u, b + 14u);
}

DE_AVX512 inline void round512(__m512i (&c0)[kGroups512], __m512i (&c1)[kGroups512],
                               __m512i (&c2)[kGroups512], __m512i (&c3)[kGroups512], __m512i k0,
                               __m512i k1) {
  const __m512i m0 = _mm512_set1_epi64(kM0), m1 = _mm512_set1_epi64(kM1);
  for (int g = 0; g < kGroups512; ++g) {
    const __m512i p0 = _mm512_mul_epu32(c0[g], m0), p1 = _mm512_mul_epu32(c2[g], m1);
    c0[g] = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), c1[g]), k0);
    c2[g] = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p0, 32), c3[g]), k1);
    c1[g] = p1;
    c3[g] = p0;
  }
}

// The low words of groups 2q and 2q+1 as sixteen 32-bit words in counter order.
DE_AVX512 inline __m512i interleave512(__m512i even, __m512i odd) {
  return _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
}

DE_AVX512 void blocks_avx512(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint32_t* w0,
                             uint32_t* w1, uint32_t* w2, uint32_t* w3) noexcept {
  const RoundKeys512 rk = round_keys512(key);
  size_t j = 0;
  while (j + kStep512 <= n) {
    const uint64_t f = first + j;
    if (static_cast<uint32_t>(f) > 0xFFFFFFFFu - (kStep512 - 1)) break;
    __m512i c0[kGroups512], c1[kGroups512], c2[kGroups512], c3[kGroups512];
    for (int g = 0; g < kGroups512; ++g) {
      c0[g] = group_counters512(static_cast<uint32_t>(f), g);
      c1[g] = _mm512_set1_epi64(static_cast<uint32_t>(f >> 32));
      c2[g] = _mm512_set1_epi64(lane);
      c3[g] = _mm512_setzero_si512();
    }
    for (int r = 0; r < 10; ++r) round512(c0, c1, c2, c3, rk.k0[r], rk.k1[r]);
    for (int q = 0; q < kGroups512 / 2; ++q) {
      const size_t at = j + 16 * static_cast<size_t>(q);
      _mm512_storeu_si512(w0 + at, interleave512(c0[2 * q], c0[2 * q + 1]));
      _mm512_storeu_si512(w1 + at, interleave512(c1[2 * q], c1[2 * q + 1]));
      if (w2) _mm512_storeu_si512(w2 + at, interleave512(c2[2 * q], c2[2 * q + 1]));
      if (w3) _mm512_storeu_si512(w3 + at, interleave512(c3[2 * q], c3[2 * q + 1]));
    }
    j += kStep512;
  }
  if (j < n) {
    blocks_avx2(key, first + j, lane, n - j, w0 + j, w1 + j, w2 ? w2 + j : nullptr,
                w3 ? w3 + j : nullptr);
  }
}

// 0 < threshold < 2^53.
DE_AVX512 void bernoulli_avx512(PhiloxKey key, uint64_t first, uint32_t lane, size_t n,
                                uint64_t threshold, uint32_t* sel) noexcept {
  const RoundKeys512 rk = round_keys512(key);
  const uint64_t pl = uint64_t{kM1} * lane;
  const __m512i k01 = _mm512_xor_si512(rk.k0[1], _mm512_set1_epi64(static_cast<uint32_t>(pl)));
  const __m512i m0 = _mm512_set1_epi64(kM0), m1 = _mm512_set1_epi64(kM1);
  // x >> 11 < T  ⇔  x < T·2^11 (T < 2^53), an unsigned comparison.
  const __m512i limit = _mm512_set1_epi64(static_cast<long long>(threshold << 11));
  const __m512i ones = _mm512_set1_epi64(-1);
  uint32_t key0[10];
  key0[0] = key[0];
  for (int r = 1; r < 10; ++r) key0[r] = key0[r - 1] + kW0;
  size_t j = 0;
  while (j + kStep512 <= n) {
    const uint64_t f = first + j;
    if (static_cast<uint32_t>(f) > 0xFFFFFFFFu - (kStep512 - 1)) break;
    const uint32_t hi = static_cast<uint32_t>(f >> 32);
    // Rounds 1 and 2 as in bernoulli_avx2.
    const uint32_t c0r2 = static_cast<uint32_t>(pl >> 32) ^ hi ^ key0[0];
    const uint64_t p0r2 = uint64_t{kM0} * c0r2;
    const __m512i hi0r2 = _mm512_set1_epi64(static_cast<uint32_t>(p0r2 >> 32));
    const __m512i lo0r2 = _mm512_set1_epi64(static_cast<uint32_t>(p0r2));
    __m512i c0[kGroups512], c1[kGroups512], c2[kGroups512], c3[kGroups512];
    for (int g = 0; g < kGroups512; ++g) {
      const __m512i p0 = _mm512_mul_epu32(group_counters512(static_cast<uint32_t>(f), g), m0);
      const __m512i c2r1 = _mm512_xor_si512(_mm512_srli_epi64(p0, 32), rk.k1[0]);
      const __m512i p1 = _mm512_mul_epu32(c2r1, m1);
      c0[g] = _mm512_xor_si512(_mm512_srli_epi64(p1, 32), k01);
      c1[g] = p1;
      c2[g] = _mm512_xor_si512(_mm512_xor_si512(hi0r2, p0), rk.k1[1]);
      c3[g] = lo0r2;
    }
    for (int r = 2; r < 9; ++r) round512(c0, c1, c2, c3, rk.k0[r], rk.k1[r]);
    __m512i mask[kGroups512];
    for (int g = 0; g < kGroups512; ++g) {
      const __m512i p1 = _mm512_mul_epu32(c2[g], m1);
      const __m512i w0 =
          _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), c1[g]), rk.k0[9]);
      const __m512i x = _mm512_mask_blend_epi32(0xAAAA, p1, _mm512_slli_epi64(w0, 32));
      mask[g] = _mm512_maskz_mov_epi64(_mm512_cmplt_epu64_mask(x, limit), ones);
    }
    for (int q = 0; q < kGroups512 / 2; ++q) {
      _mm512_storeu_si512(sel + j + 16 * static_cast<size_t>(q),
                          _mm512_mask_blend_epi32(0xAAAA, mask[2 * q], mask[2 * q + 1]));
    }
    j += kStep512;
  }
  if (j < n) bernoulli_avx2(key, first + j, lane, n - j, threshold, sel + j);
}

bool have_avx512() noexcept {
  static const bool v = have_avx2() && (__builtin_cpu_init(), __builtin_cpu_supports("avx512f"));
  return v;
}
#pragma GCC diagnostic pop
#undef DE_AVX512
#endif

}  // namespace

bool philox_isa_available(PhiloxIsa isa) noexcept {
  switch (isa) {
    case PhiloxIsa::Generic:
      return true;
#if DELTAEDIT_PHILOX_AVX2
    case PhiloxIsa::Avx2:
      return have_avx2();
    case PhiloxIsa::Avx512:
      return have_avx512();
#else
    default:
      return false;
#endif
  }
  return false;
}

PhiloxIsa philox_default_isa() noexcept {
  if (philox_isa_available(PhiloxIsa::Avx512)) return PhiloxIsa::Avx512;
  if (philox_isa_available(PhiloxIsa::Avx2)) return PhiloxIsa::Avx2;
  return PhiloxIsa::Generic;
}

const char* philox_isa_name(PhiloxIsa isa) noexcept {
  switch (isa) {
    case PhiloxIsa::Generic:
      return "generic";
    case PhiloxIsa::Avx2:
      return "avx2";
    case PhiloxIsa::Avx512:
      return "avx512";
  }
  return "?";
}

void philox_blocks_on(PhiloxIsa isa, PhiloxKey key, uint64_t first, uint32_t lane, size_t n,
                      uint32_t* w0, uint32_t* w1, uint32_t* w2, uint32_t* w3) noexcept {
  if (!philox_isa_available(isa)) isa = PhiloxIsa::Generic;
#if DELTAEDIT_PHILOX_AVX2
  if (isa == PhiloxIsa::Avx512) return blocks_avx512(key, first, lane, n, w0, w1, w2, w3);
  if (isa == PhiloxIsa::Avx2) return blocks_avx2(key, first, lane, n, w0, w1, w2, w3);
#endif
  blocks_generic(key, first, lane, n, w0, w1, w2, w3);
}

void bernoulli_lane_on(PhiloxIsa isa, PhiloxKey key, uint64_t first, uint32_t lane, size_t n,
                       uint64_t threshold, uint32_t* sel) noexcept {
  if (threshold == 0) {
    std::fill(sel, sel + n, 0u);
    return;
  }
  if (threshold >= (uint64_t{1} << 53)) {  // every 53-bit word is below it
    std::fill(sel, sel + n, ~0u);
    return;
  }
  if (!philox_isa_available(isa)) isa = PhiloxIsa::Generic;
#if DELTAEDIT_PHILOX_AVX2
  if (isa == PhiloxIsa::Avx512) return bernoulli_avx512(key, first, lane, n, threshold, sel);
  if (isa == PhiloxIsa::Avx2) return bernoulli_avx2(key, first, lane, n, threshold, sel);
#endif
  bernoulli_generic(key, first, lane, n, threshold, sel);
}

void bernoulli_select_on(PhiloxIsa isa, PhiloxKey key, uint64_t first, size_t n, uint64_t threshold,
                         uint32_t* sel) noexcept {
  bernoulli_lane_on(isa, key, first, 0, n, threshold, sel);
}

namespace {
PhiloxIsa default_isa() noexcept {
  static const PhiloxIsa isa = philox_default_isa();
  return isa;
}
}  // namespace

void philox_blocks(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint32_t* w0,
                   uint32_t* w1, uint32_t* w2, uint32_t* w3) noexcept {
  philox_blocks_on(default_isa(), key, first, lane, n, w0, w1, w2, w3);
}

void bernoulli_select(PhiloxKey key, uint64_t first, size_t n, uint64_t threshold,
                      uint32_t* sel) noexcept {
  bernoulli_select_on(default_isa(), key, first, n, threshold, sel);
}

void bernoulli_lane(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint64_t threshold,
                    uint32_t* sel) noexcept {
  bernoulli_lane_on(default_isa(), key, first, lane, n, threshold, sel);
}

}  // namespace deltaedit::util
