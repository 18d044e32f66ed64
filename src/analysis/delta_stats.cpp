#include "analysis/delta_stats.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "io/convert.h"

// The vector body and the scalar head/tail must round identically: no contraction into FMA.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

// The kernels come in a generic version (vector extensions) and an AVX2 version picked at run
// time where the CPU has it, so a generic x86-64 build uses AVX2. Both do the same IEEE operations
// lane by lane, in the same order: identical results.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DELTAEDIT_AVX2_KERNELS 1
#include <immintrin.h>
#else
#define DELTAEDIT_AVX2_KERNELS 0
#endif
// The generic helpers pass 32-byte vectors by value; they are always inlined, so the ABI note is moot.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#elif defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace deltaedit::analysis {
namespace {

static_assert(kAccumLanes == 4, "the vector kernels below hold one lane per vector element");

typedef double v4d __attribute__((vector_size(32)));
typedef int64_t v4q __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kAbsMask = 0x7FFFFFFFFFFFFFFFll;

inline v4f load4(const float* p) {
  v4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v4d loadd(const double* p) {
  v4d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline v4q loadq(const uint64_t* p) {
  v4q v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void stored(double* p, const v4d& v) { std::memcpy(p, &v, sizeof v); }
inline void storeq(uint64_t* p, const v4q& v) { std::memcpy(p, &v, sizeof v); }
inline v4d vabs(const v4d& x) { return (v4d)((v4q)x & kAbsMask); }
inline v4d vmask(const v4d& x, const v4q& m) { return (v4d)((v4q)x & m); }

// One element into lane j: exactly the operations of one vector element in delta_kernel.
inline void delta_one(DeltaAccum::Lanes& L, size_t j, float b, float p) {
  const float d = p - b;
  const double dd = d, bd = b;
  const bool fin = std::fabs(dd) < kInf && std::fabs(bd) < kInf;
  const double dz = fin ? dd : 0.0, bz = fin ? bd : 0.0;
  const double a = std::fabs(dz);
  L.s[j] += dz;
  L.sq[j] += dz * dz;
  L.sa[j] += a;
  L.mx[j] = a > L.mx[j] ? a : L.mx[j];
  L.bsq[j] += bz * bz;
  L.pos[j] += dz > 0.0;
  L.zer[j] += fin && dz == 0.0;
  L.bad[j] += !fin;
}

// n is a multiple of 4; element k goes to lane k % 4.
void delta_kernel_generic(DeltaAccum::Lanes& L, const float* base, const float* post, size_t n) {
  v4d s = loadd(L.s), sq = loadd(L.sq), sa = loadd(L.sa), mx = loadd(L.mx), bsq = loadd(L.bsq);
  v4q pos = loadq(L.pos), zer = loadq(L.zer), bad = loadq(L.bad);
  const v4d inf = {kInf, kInf, kInf, kInf};
  const v4d zero = {0.0, 0.0, 0.0, 0.0};
  for (size_t i = 0; i < n; i += 4) {
    const v4f bf = load4(base + i);
    const v4f df = load4(post + i) - bf;
    const v4d dd = __builtin_convertvector(df, v4d), bd = __builtin_convertvector(bf, v4d);
    const v4q fin = (v4q)(vabs(dd) < inf) & (v4q)(vabs(bd) < inf);
    const v4d dz = vmask(dd, fin), bz = vmask(bd, fin);
    const v4d a = vabs(dz);
    s += dz;
    sq += dz * dz;
    sa += a;
    const v4q gt = (v4q)(a > mx);
    mx = (v4d)(((v4q)a & gt) | ((v4q)mx & ~gt));
    bsq += bz * bz;
    pos -= (v4q)(dz > zero);
    zer -= (v4q)(dz == zero) & fin;
    bad -= ~fin;
  }
  stored(L.s, s);
  stored(L.sq, sq);
  stored(L.sa, sa);
  stored(L.mx, mx);
  stored(L.bsq, bsq);
  storeq(L.pos, pos);
  storeq(L.zer, zer);
  storeq(L.bad, bad);
}

// One element into lane j: exactly the operations of one vector element in edit_kernel.
inline void edit_one(EditAccum::Lanes& L, size_t j, float a, float b) {
  const double da = a, db = b;
  const bool fin = std::fabs(da) < kInf && std::fabs(db) < kInf;
  const double x = fin ? da : 0.0, y = fin ? db : 0.0;
  const double d = y - x;
  L.dsq[j] += x * x;
  L.esq[j] += y * y;
  L.dd[j] += d * d;
  L.dot[j] += x * y;
  L.nz[j] += x != 0.0;
  L.agree[j] += (x > 0.0 && y > 0.0) || (x < 0.0 && y < 0.0);
  L.bad[j] += !fin;
}

void edit_kernel_generic(EditAccum::Lanes& L, const float* delta, const float* edited, size_t n) {
  v4d dsq = loadd(L.dsq), esq = loadd(L.esq), dd = loadd(L.dd), dot = loadd(L.dot);
  v4q nz = loadq(L.nz), agree = loadq(L.agree), bad = loadq(L.bad);
  const v4d inf = {kInf, kInf, kInf, kInf};
  const v4d zero = {0.0, 0.0, 0.0, 0.0};
  for (size_t i = 0; i < n; i += 4) {
    const v4d da = __builtin_convertvector(load4(delta + i), v4d);
    const v4d db = __builtin_convertvector(load4(edited + i), v4d);
    const v4q fin = (v4q)(vabs(da) < inf) & (v4q)(vabs(db) < inf);
    const v4d x = vmask(da, fin), y = vmask(db, fin);
    const v4d d = y - x;
    dsq += x * x;
    esq += y * y;
    dd += d * d;
    dot += x * y;
    nz -= (v4q)(x != zero);
    agree -= ((v4q)(x > zero) & (v4q)(y > zero)) | ((v4q)(x < zero) & (v4q)(y < zero));
    bad -= ~fin;
  }
  stored(L.dsq, dsq);
  stored(L.esq, esq);
  stored(L.dd, dd);
  stored(L.dot, dot);
  storeq(L.nz, nz);
  storeq(L.agree, agree);
  storeq(L.bad, bad);
}

#if DELTAEDIT_AVX2_KERNELS
// The same per-lane operations as the generic kernels, eight elements per iteration (the first
// four, then the next four, into lanes 0–3: the order within each lane is unchanged). max_pd(a, m)
// is `a > m ? a : m`, as in the generic kernel.
__attribute__((target("avx2"))) void delta_kernel_avx2(DeltaAccum::Lanes& L, const float* base, const float* post,
                                                       size_t n) {
  __m256d s = _mm256_loadu_pd(L.s), sq = _mm256_loadu_pd(L.sq), sa = _mm256_loadu_pd(L.sa),
          mx = _mm256_loadu_pd(L.mx), bsq = _mm256_loadu_pd(L.bsq);
  __m256i pos = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.pos)),
          zer = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.zer)),
          bad = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.bad));
  const __m256d inf = _mm256_set1_pd(kInf), zero = _mm256_setzero_pd();
  const __m256d absm = _mm256_castsi256_pd(_mm256_set1_epi64x(kAbsMask));
  const __m256i ones = _mm256_set1_epi64x(-1);
  const auto step = [&](__m128 bf, __m128 df) __attribute__((target("avx2"))) {
    const __m256d dd = _mm256_cvtps_pd(df), bd = _mm256_cvtps_pd(bf);
    const __m256d ad = _mm256_and_pd(dd, absm), ab = _mm256_and_pd(bd, absm);
    const __m256d fin = _mm256_and_pd(_mm256_cmp_pd(ad, inf, _CMP_LT_OQ), _mm256_cmp_pd(ab, inf, _CMP_LT_OQ));
    const __m256d dz = _mm256_and_pd(dd, fin), bz = _mm256_and_pd(bd, fin), a = _mm256_and_pd(ad, fin);
    s = _mm256_add_pd(s, dz);
    sq = _mm256_add_pd(sq, _mm256_mul_pd(dz, dz));
    sa = _mm256_add_pd(sa, a);
    mx = _mm256_max_pd(a, mx);
    bsq = _mm256_add_pd(bsq, _mm256_mul_pd(bz, bz));
    const __m256i fi = _mm256_castpd_si256(fin);
    pos = _mm256_sub_epi64(pos, _mm256_castpd_si256(_mm256_cmp_pd(dz, zero, _CMP_GT_OQ)));
    zer = _mm256_sub_epi64(zer, _mm256_and_si256(_mm256_castpd_si256(_mm256_cmp_pd(dz, zero, _CMP_EQ_OQ)), fi));
    bad = _mm256_sub_epi64(bad, _mm256_xor_si256(fi, ones));
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 b8 = _mm256_loadu_ps(base + i);
    const __m256 d8 = _mm256_sub_ps(_mm256_loadu_ps(post + i), b8);
    step(_mm256_castps256_ps128(b8), _mm256_castps256_ps128(d8));
    step(_mm256_extractf128_ps(b8, 1), _mm256_extractf128_ps(d8, 1));
  }
  for (; i < n; i += 4) {
    const __m128 b4 = _mm_loadu_ps(base + i);
    step(b4, _mm_sub_ps(_mm_loadu_ps(post + i), b4));
  }
  _mm256_storeu_pd(L.s, s);
  _mm256_storeu_pd(L.sq, sq);
  _mm256_storeu_pd(L.sa, sa);
  _mm256_storeu_pd(L.mx, mx);
  _mm256_storeu_pd(L.bsq, bsq);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(L.pos), pos);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(L.zer), zer);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(L.bad), bad);
}

__attribute__((target("avx2"))) void edit_kernel_avx2(EditAccum::Lanes& L, const float* delta, const float* edited,
                                                      size_t n) {
  __m256d dsq = _mm256_loadu_pd(L.dsq), esq = _mm256_loadu_pd(L.esq), dd = _mm256_loadu_pd(L.dd),
          dot = _mm256_loadu_pd(L.dot);
  __m256i nz = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.nz)),
          agree = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.agree)),
          bad = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(L.bad));
  const __m256d inf = _mm256_set1_pd(kInf), zero = _mm256_setzero_pd();
  const __m256d absm = _mm256_castsi256_pd(_mm256_set1_epi64x(kAbsMask));
  const __m256i ones = _mm256_set1_epi64x(-1);
  for (size_t i = 0; i < n; i += 4) {
    const __m256d da = _mm256_cvtps_pd(_mm_loadu_ps(delta + i)), db = _mm256_cvtps_pd(_mm_loadu_ps(edited + i));
    const __m256d fin = _mm256_and_pd(_mm256_cmp_pd(_mm256_and_pd(da, absm), inf, _CMP_LT_OQ),
                                      _mm256_cmp_pd(_mm256_and_pd(db, absm), inf, _CMP_LT_OQ));
    const __m256d x = _mm256_and_pd(da, fin), y = _mm256_and_pd(db, fin);
    const __m256d d = _mm256_sub_pd(y, x);
    dsq = _mm256_add_pd(dsq, _mm256_mul_pd(x, x));
    esq = _mm256_add_pd(esq, _mm256_mul_pd(y, y));
    dd = _mm256_add_pd(dd, _mm256_mul_pd(d, d));
    dot = _mm256_add_pd(dot, _mm256_mul_pd(x, y));
    nz = _mm256_sub_epi64(nz, _mm256_castpd_si256(_mm256_cmp_pd(x, zero, _CMP_NEQ_OQ)));
    const __m256d same = _mm256_or_pd(
        _mm256_and_pd(_mm256_cmp_pd(x, zero, _CMP_GT_OQ), _mm256_cmp_pd(y, zero, _CMP_GT_OQ)),
        _mm256_and_pd(_mm256_cmp_pd(x, zero, _CMP_LT_OQ), _mm256_cmp_pd(y, zero, _CMP_LT_OQ)));
    agree = _mm256_sub_epi64(agree, _mm256_castpd_si256(same));
    bad = _mm256_sub_epi64(bad, _mm256_xor_si256(_mm256_castpd_si256(fin), ones));
  }
  _mm256_storeu_pd(L.dsq, dsq);
  _mm256_storeu_pd(L.esq, esq);
  _mm256_storeu_pd(L.dd, dd);
  _mm256_storeu_pd(L.dot, dot);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(L.nz), nz);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(L.agree), agree);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(L.bad), bad);
}

// edit_kernel_avx2's sums in the same lane order (elements i..i+3 into lanes 0–3, then i+4..i+7),
// eight elements per iteration, for blocks of eight whose Δ and Δ' are all finite (checked in
// f32, which is the same test as in f64): no masking, the counts kept as integers and folded into
// lane 0 at the end (the folded totals are unchanged), and x², y², x·y accumulated by FMA. That
// last step gives the very same bits: x and y are f32 values, so their product is exact in f64
// and rounding it before the add (as the other kernels do) changes nothing. (y − x)² is not
// exact, and keeps its separate multiply and add. A block with a non-finite entry goes through
// edit_kernel_avx2, which masks it.
__attribute__((target("avx2,fma,popcnt"))) void edit_kernel_fast_avx2(EditAccum::Lanes& L, const float* delta,
                                                                      const float* edited, size_t n) {
  __m256d dsq = _mm256_loadu_pd(L.dsq), esq = _mm256_loadu_pd(L.esq), dd = _mm256_loadu_pd(L.dd),
          dot = _mm256_loadu_pd(L.dot);
  const __m256 absf = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 inff = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 zerof = _mm256_setzero_ps();
  uint64_t nz = 0, agree = 0;
  const auto four = [&](__m128 xf, __m128 yf) __attribute__((target("avx2,fma"))) {
    const __m256d x = _mm256_cvtps_pd(xf), y = _mm256_cvtps_pd(yf);
    const __m256d d = _mm256_sub_pd(y, x);
    dsq = _mm256_fmadd_pd(x, x, dsq);
    esq = _mm256_fmadd_pd(y, y, esq);
    dd = _mm256_add_pd(dd, _mm256_mul_pd(d, d));
    dot = _mm256_fmadd_pd(x, y, dot);
  };
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x8 = _mm256_loadu_ps(delta + i), y8 = _mm256_loadu_ps(edited + i);
    const __m256 fin = _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(x8, absf), inff, _CMP_LT_OQ),
                                     _mm256_cmp_ps(_mm256_and_ps(y8, absf), inff, _CMP_LT_OQ));
    if (_mm256_movemask_ps(fin) != 0xFF) {
      _mm256_storeu_pd(L.dsq, dsq);
      _mm256_storeu_pd(L.esq, esq);
      _mm256_storeu_pd(L.dd, dd);
      _mm256_storeu_pd(L.dot, dot);
      edit_kernel_avx2(L, delta + i, edited + i, 8);
      dsq = _mm256_loadu_pd(L.dsq);
      esq = _mm256_loadu_pd(L.esq);
      dd = _mm256_loadu_pd(L.dd);
      dot = _mm256_loadu_pd(L.dot);
      continue;
    }
    const __m256 xp = _mm256_cmp_ps(x8, zerof, _CMP_GT_OQ), xn = _mm256_cmp_ps(x8, zerof, _CMP_LT_OQ);
    const __m256 same = _mm256_or_ps(_mm256_and_ps(xp, _mm256_cmp_ps(y8, zerof, _CMP_GT_OQ)),
                                     _mm256_and_ps(xn, _mm256_cmp_ps(y8, zerof, _CMP_LT_OQ)));
    nz += uint64_t(__builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_or_ps(xp, xn)))));
    agree += uint64_t(__builtin_popcount(unsigned(_mm256_movemask_ps(same))));
    four(_mm256_castps256_ps128(x8), _mm256_castps256_ps128(y8));
    four(_mm256_extractf128_ps(x8, 1), _mm256_extractf128_ps(y8, 1));
  }
  _mm256_storeu_pd(L.dsq, dsq);
  _mm256_storeu_pd(L.esq, esq);
  _mm256_storeu_pd(L.dd, dd);
  _mm256_storeu_pd(L.dot, dot);
  L.nz[0] += nz;
  L.agree[0] += agree;
  if (i < n) edit_kernel_avx2(L, delta + i, edited + i, n - i);  // a last group of four
}

// BF16 inputs decoded in registers. Blocks of 8 whose base and Δ are all finite (the common case)
// take a short path: no masking, and the order-free parts (counts, max) are kept in f32/integer
// form and folded into lane 0 at the end, which leaves every folded total unchanged. A block with
// a non-finite entry goes through the masked step of delta_kernel_avx2, which is exact for it.
__attribute__((target("avx2"))) inline __m256 bf16x8_to_f32(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2,popcnt"))) void delta_kernel_bf16_avx2(DeltaAccum::Lanes& L, const uint16_t* base,
                                                                   const uint16_t* post, size_t n) {
  __m256d s = _mm256_loadu_pd(L.s), sq = _mm256_loadu_pd(L.sq), sa = _mm256_loadu_pd(L.sa),
          bsq = _mm256_loadu_pd(L.bsq);
  const __m256 absf = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 inff = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 zerof = _mm256_setzero_ps();
  const __m256d absm = _mm256_castsi256_pd(_mm256_set1_epi64x(kAbsMask));
  __m256 mx8 = _mm256_setzero_ps();
  uint64_t pos = 0, zer = 0;
  const auto four = [&](__m128 bf, __m128 df) __attribute__((target("avx2"))) {
    const __m256d dd = _mm256_cvtps_pd(df), bd = _mm256_cvtps_pd(bf);
    s = _mm256_add_pd(s, dd);
    sq = _mm256_add_pd(sq, _mm256_mul_pd(dd, dd));
    sa = _mm256_add_pd(sa, _mm256_and_pd(dd, absm));
    bsq = _mm256_add_pd(bsq, _mm256_mul_pd(bd, bd));
  };
  for (size_t i = 0; i < n; i += 8) {
    const __m256 b8 = bf16x8_to_f32(base + i);
    const __m256 d8 = _mm256_sub_ps(bf16x8_to_f32(post + i), b8);
    const __m256 ad = _mm256_and_ps(d8, absf);
    const __m256 fin = _mm256_and_ps(_mm256_cmp_ps(ad, inff, _CMP_LT_OQ),
                                     _mm256_cmp_ps(_mm256_and_ps(b8, absf), inff, _CMP_LT_OQ));
    if (_mm256_movemask_ps(fin) != 0xFF) {
      alignas(32) float bb[8], pp[8];
      _mm256_store_ps(bb, b8);
      _mm256_store_ps(pp, bf16x8_to_f32(post + i));
      _mm256_storeu_pd(L.s, s);
      _mm256_storeu_pd(L.sq, sq);
      _mm256_storeu_pd(L.sa, sa);
      _mm256_storeu_pd(L.bsq, bsq);
      delta_kernel_avx2(L, bb, pp, 8);
      s = _mm256_loadu_pd(L.s);
      sq = _mm256_loadu_pd(L.sq);
      sa = _mm256_loadu_pd(L.sa);
      bsq = _mm256_loadu_pd(L.bsq);
      continue;
    }
    mx8 = _mm256_max_ps(mx8, ad);
    pos += uint64_t(__builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_cmp_ps(d8, zerof, _CMP_GT_OQ)))));
    zer += uint64_t(__builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_cmp_ps(d8, zerof, _CMP_EQ_OQ)))));
    four(_mm256_castps256_ps128(b8), _mm256_castps256_ps128(d8));
    four(_mm256_extractf128_ps(b8, 1), _mm256_extractf128_ps(d8, 1));
  }
  _mm256_storeu_pd(L.s, s);
  _mm256_storeu_pd(L.sq, sq);
  _mm256_storeu_pd(L.sa, sa);
  _mm256_storeu_pd(L.bsq, bsq);
  alignas(32) float m[8];
  _mm256_store_ps(m, mx8);
  for (float v : m) L.mx[0] = double(v) > L.mx[0] ? double(v) : L.mx[0];
  L.pos[0] += pos;
  L.zer[0] += zer;
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
const bool kHaveFma = kHaveAvx2 && __builtin_cpu_supports("fma");
#endif

void delta_kernel(DeltaAccum::Lanes& L, const float* base, const float* post, size_t n) {
#if DELTAEDIT_AVX2_KERNELS
  if (kHaveAvx2) return delta_kernel_avx2(L, base, post, n);
#endif
  delta_kernel_generic(L, base, post, n);
}

void edit_kernel(EditAccum::Lanes& L, const float* delta, const float* edited, size_t n) {
#if DELTAEDIT_AVX2_KERNELS
  if (kHaveFma) return edit_kernel_fast_avx2(L, delta, edited, n);
  if (kHaveAvx2) return edit_kernel_avx2(L, delta, edited, n);
#endif
  edit_kernel_generic(L, delta, edited, n);
}

}  // namespace

void DeltaAccum::add(std::span<const float> base, std::span<const float> post) {
  const size_t m = base.size();
  size_t i = 0, j = size_t(n % kAccumLanes);
  for (; j != 0 && i < m; ++i, j = (j + 1) % kAccumLanes) delta_one(lanes, j, base[i], post[i]);
  const size_t body = (m - i) / kAccumLanes * kAccumLanes;
  delta_kernel(lanes, base.data() + i, post.data() + i, body);
  i += body;
  for (j = 0; i < m; ++i, ++j) delta_one(lanes, j, base[i], post[i]);
  n += m;
}

void DeltaAccum::add_bf16(std::span<const uint16_t> base, std::span<const uint16_t> post) {
  const auto dec = io::bf16_to_f32;
  const size_t m = base.size();
  size_t i = 0, j = size_t(n % kAccumLanes);
  for (; j != 0 && i < m; ++i, j = (j + 1) % kAccumLanes) delta_one(lanes, j, dec(base[i]), dec(post[i]));
#if DELTAEDIT_AVX2_KERNELS
  if (kHaveAvx2) {
    const size_t body = (m - i) / 8 * 8;
    delta_kernel_bf16_avx2(lanes, base.data() + i, post.data() + i, body);
    i += body;
  }
#endif
  // The rest (or all of it without AVX2) in small decoded blocks through the f32 kernel.
  constexpr size_t kB = 256;
  float b[kB], p[kB];
  while (m - i >= kAccumLanes) {
    const size_t c = std::min(kB, (m - i) / kAccumLanes * kAccumLanes);
    for (size_t k = 0; k < c; ++k) {
      b[k] = dec(base[i + k]);
      p[k] = dec(post[i + k]);
    }
    delta_kernel(lanes, b, p, c);
    i += c;
  }
  for (j = 0; i < m; ++i, ++j) delta_one(lanes, j, dec(base[i]), dec(post[i]));
  n += m;
}

DeltaAccum DeltaAccum::folded() const {
  DeltaAccum r = *this;
  for (size_t j = 0; j < kAccumLanes; ++j) {
    r.sum += lanes.s[j];
    r.sumsq += lanes.sq[j];
    r.sumabs += lanes.sa[j];
    r.maxabs = lanes.mx[j] > r.maxabs ? lanes.mx[j] : r.maxabs;
    r.base_sumsq += lanes.bsq[j];
    r.positive += lanes.pos[j];
    r.zero += lanes.zer[j];
    r.nonfinite += lanes.bad[j];
  }
  r.lanes = Lanes{};
  return r;
}

void DeltaAccum::merge(const DeltaAccum& other) {
  const DeltaAccum o = other.folded();
  n += o.n;
  positive += o.positive;
  zero += o.zero;
  nonfinite += o.nonfinite;
  sum += o.sum;
  sumsq += o.sumsq;
  sumabs += o.sumabs;
  maxabs = std::fmax(maxabs, o.maxabs);
  base_sumsq += o.base_sumsq;
}

DeltaStats DeltaStats::from(const DeltaAccum& acc) {
  const DeltaAccum a = acc.folded();
  DeltaStats s;
  s.n = a.n;
  s.nonfinite = a.nonfinite;
  const double m = double(a.n > a.nonfinite ? a.n - a.nonfinite : 0);
  s.norm = std::sqrt(a.sumsq);
  s.rel_norm = a.base_sumsq > 0 ? s.norm / std::sqrt(a.base_sumsq) : 0.0;
  if (m > 0) {
    s.mean = a.sum / m;
    s.std = std::sqrt(std::fmax(0.0, a.sumsq / m - s.mean * s.mean));
    s.mean_abs = a.sumabs / m;
    s.frac_positive = double(a.positive) / m;
    s.frac_zero = double(a.zero) / m;
  }
  s.max_abs = a.maxabs;
  return s;
}

nlohmann::json DeltaStats::to_json() const {
  return {{"numel", n},          {"norm", norm},
          {"rel_norm", rel_norm}, {"mean", mean},
          {"std", std},          {"mean_abs", mean_abs},
          {"max_abs", max_abs},  {"frac_positive", frac_positive},
          {"frac_zero", frac_zero}, {"nonfinite", nonfinite}};
}

void EditAccum::add(std::span<const float> delta, std::span<const float> edited) {
  const size_t m = delta.size();
  size_t i = 0, j = size_t(n % kAccumLanes);
  for (; j != 0 && i < m; ++i, j = (j + 1) % kAccumLanes) edit_one(lanes, j, delta[i], edited[i]);
  const size_t body = (m - i) / kAccumLanes * kAccumLanes;
  edit_kernel(lanes, delta.data() + i, edited.data() + i, body);
  i += body;
  for (j = 0; i < m; ++i, ++j) edit_one(lanes, j, delta[i], edited[i]);
  n += m;
}

EditAccum EditAccum::folded() const {
  EditAccum r = *this;
  for (size_t j = 0; j < kAccumLanes; ++j) {
    r.delta_sumsq += lanes.dsq[j];
    r.edited_sumsq += lanes.esq[j];
    r.d_sumsq += lanes.dd[j];
    r.dot += lanes.dot[j];
    r.nonzero_pairs += lanes.nz[j];
    r.sign_agree += lanes.agree[j];
    r.nonfinite += lanes.bad[j];
  }
  r.lanes = Lanes{};
  return r;
}

void EditAccum::merge(const EditAccum& other) {
  const EditAccum o = other.folded();
  n += o.n;
  sign_agree += o.sign_agree;
  nonzero_pairs += o.nonzero_pairs;
  nonfinite += o.nonfinite;
  delta_sumsq += o.delta_sumsq;
  edited_sumsq += o.edited_sumsq;
  d_sumsq += o.d_sumsq;
  dot += o.dot;
}

EditStats EditStats::from(const EditAccum& acc) {
  const EditAccum a = acc.folded();
  EditStats s;
  s.nonfinite = a.nonfinite;
  if (a.delta_sumsq > 0) {
    s.intensity = a.d_sumsq / a.delta_sumsq;
    s.d_over_delta = std::sqrt(s.intensity);
  }
  if (a.delta_sumsq > 0 && a.edited_sumsq > 0) s.cosine = a.dot / std::sqrt(a.delta_sumsq * a.edited_sumsq);
  if (a.nonzero_pairs > 0) s.sign_agreement = double(a.sign_agree) / double(a.nonzero_pairs);
  return s;
}

nlohmann::json EditStats::to_json() const {
  return {{"d_over_delta", d_over_delta},
          {"intensity", intensity},
          {"cosine", cosine},
          {"sign_agreement", sign_agreement},
          {"nonfinite", nonfinite}};
}

}  // namespace deltaedit::analysis
