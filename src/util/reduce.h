// f64 reductions in a fixed order that does not wait on one add per element.
//
// The order: indices are cut into blocks of kReduceBlock. Inside a block, term i goes to lane
// i mod kReduceLanes (kReduceLanes independent accumulators, each summed in index order, each
// starting at +0); the lanes are then folded in halves — lane k += lane k + 8, then k += k + 4,
// k += k + 2, k += k + 1 — which gives the block sum; block sums are added in block order to a
// total that starts at +0. A parallel or streamed caller that produces the same block sums on
// any threads, in any pieces, gets the same bits (BlockedSum streams this order). The lanes let
// the adds of neighbouring terms run at once (and in SIMD registers), instead of one long chain.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

namespace deltaedit::util {

inline constexpr size_t kReduceBlock = 65536;
inline constexpr size_t kReduceLanes = 16;
static_assert(kReduceBlock % kReduceLanes == 0);

inline size_t reduce_block_count(size_t n) { return (n + kReduceBlock - 1) / kReduceBlock; }

// The block sum from its lanes, folded in halves.
inline double fold_lanes(const double (&lane)[kReduceLanes]) {
  double s[kReduceLanes];
  for (size_t k = 0; k < kReduceLanes; ++k) s[k] = lane[k];
  for (size_t w = kReduceLanes / 2; w >= 1; w /= 2) {
    for (size_t k = 0; k < w; ++k) s[k] += s[k + w];
  }
  return s[0];
}

// lane[(i − begin) mod kReduceLanes] += term(i) for i in [begin, end), in index order per lane;
// begin is a multiple of kReduceLanes relative to the block start.
// The lanes are summed in a local copy: the terms' loads (a byte mask, say) cannot alias it,
// so the lane loop vectorises.
template <class Term>
inline void add_to_lanes(double (&lane)[kReduceLanes], size_t begin, size_t end, Term&& term) {
  double acc[kReduceLanes];
  for (size_t k = 0; k < kReduceLanes; ++k) acc[k] = lane[k];
  size_t i = begin;
  for (; i + kReduceLanes <= end; i += kReduceLanes) {
    for (size_t k = 0; k < kReduceLanes; ++k) acc[k] += static_cast<double>(term(i + k));
  }
  for (size_t k = 0; i < end; ++i, ++k) acc[k] += static_cast<double>(term(i));
  for (size_t k = 0; k < kReduceLanes; ++k) lane[k] = acc[k];
}

// Σ_{i in block b} term(i) in the lane order.
template <class Term>
double reduce_block(size_t n, size_t b, Term&& term) {
  const size_t begin = b * kReduceBlock, end = std::min(n, begin + kReduceBlock);
  double lane[kReduceLanes] = {};
  add_to_lanes(lane, begin, end, term);
  return fold_lanes(lane);
}

// Σ_{i<n} term(i) in the fixed order.
template <class Term>
double ordered_sum(size_t n, Term&& term) {
  double total = 0.0;
  const size_t blocks = reduce_block_count(n);
  for (size_t b = 0; b < blocks; ++b) total += reduce_block(n, b, term);
  return total;
}

// add_to_lanes(lane, 0, n, [&](i) { return double(x[i]); }) for f32 terms, with vector clones
// (reduce.cpp): each lane still adds its terms in index order, so the bits are the same.
void add_f32_to_lanes(double (&lane)[kReduceLanes], const float* x, size_t n);
// The same for the terms double(x[i])² (exact: the square of an f32 value fits in f64).
void add_f32_squares_to_lanes(double (&lane)[kReduceLanes], const float* x, size_t n);

// How many of x are finite (vector clones).
uint64_t count_finite(std::span<const float> x);

// out[i] = |x[i]| where x[i] is finite, else 0, in f32 (exact: double(out[i]) is finite_abs(x[i])).
void finite_abs_f32(const float* x, float* out, size_t n);

// ordered_sum fed in pieces, in index order: add(count, term) adds term(j) for j < count as the
// next `count` indices of the sum; sum() equals ordered_sum over every term added so far.
class BlockedSum {
 public:
  template <class Term>
  void add(size_t count, Term&& term) {
    size_t j = 0;
    while (j < count) {
      const size_t in_block = static_cast<size_t>(next_ % kReduceBlock);
      const size_t take = std::min(count - j, kReduceBlock - in_block);
      size_t k = 0;
      // Up to a lane boundary one term at a time, then whole lane rows.
      for (; k < take && (in_block + k) % kReduceLanes != 0; ++k)
        lane_[(in_block + k) % kReduceLanes] += static_cast<double>(term(j + k));
      add_to_lanes(lane_, 0, take - k, [&](size_t t) { return term(j + k + t); });
      next_ += take;
      j += take;
      if (next_ % kReduceBlock == 0) {
        total_ += fold_lanes(lane_);
        std::fill(std::begin(lane_), std::end(lane_), 0.0);
      }
    }
  }
  // add(terms.size(), [&](j) { return double(terms[j]); }), the lane rows through the vector
  // clones of add_f32_to_lanes: the same bits.
  void add_f32(std::span<const float> terms) { add_f32_terms(terms, false); }
  // add(terms.size(), [&](j) { double t = terms[j]; return t * t; }), the same way.
  void add_f32_squares(std::span<const float> terms) { add_f32_terms(terms, true); }
  // add(x.size(), [&](j) { return finite_abs(x[j]); }) (squared when `squares`), the terms
  // formed in small tiles by finite_abs_f32 and summed as add_f32 does: the same bits.
  void add_finite_abs(std::span<const float> x, bool squares = false);
  double sum() const { return next_ % kReduceBlock == 0 ? total_ : total_ + fold_lanes(lane_); }
  uint64_t count() const { return next_; }

 private:
  void add_f32_terms(std::span<const float> terms, bool squares) {
    size_t j = 0;
    const size_t count = terms.size();
    while (j < count) {
      const size_t in_block = static_cast<size_t>(next_ % kReduceBlock);
      const size_t take = std::min(count - j, kReduceBlock - in_block);
      size_t k = 0;
      for (; k < take && (in_block + k) % kReduceLanes != 0; ++k) {
        const double t = terms[j + k];
        lane_[(in_block + k) % kReduceLanes] += squares ? t * t : t;
      }
      if (squares)
        add_f32_squares_to_lanes(lane_, terms.data() + j + k, take - k);
      else
        add_f32_to_lanes(lane_, terms.data() + j + k, take - k);
      next_ += take;
      j += take;
      if (next_ % kReduceBlock == 0) {
        total_ += fold_lanes(lane_);
        std::fill(std::begin(lane_), std::end(lane_), 0.0);
      }
    }
  }

  double total_ = 0.0;
  double lane_[kReduceLanes] = {};
  uint64_t next_ = 0;
};

inline double sum(std::span<const float> x) {
  return ordered_sum(x.size(), [&](size_t i) { return static_cast<double>(x[i]); });
}

inline double sum_abs(std::span<const float> x) {
  return ordered_sum(x.size(), [&](size_t i) { return std::fabs(static_cast<double>(x[i])); });
}

inline double sum_sq(std::span<const float> x) {
  return ordered_sum(x.size(), [&](size_t i) {
    const double v = x[i];
    return v * v;
  });
}

// ⟨a, b⟩ over min(|a|, |b|) elements.
inline double dot(std::span<const float> a, std::span<const float> b) {
  const size_t n = std::min(a.size(), b.size());
  return ordered_sum(
      n, [&](size_t i) { return static_cast<double>(a[i]) * static_cast<double>(b[i]); });
}

// |x| when x is finite, else 0 (the term of the finite-entry sums).
inline double finite_abs(float x) {
  return std::fabs(x) <= std::numeric_limits<float>::max() ? std::fabs(static_cast<double>(x))
                                                           : 0.0;
}

// Statistics of |x| over the finite entries only (NaN and ±Inf are counted apart): the sums run
// over every index with 0 for the non-finite entries.
struct FiniteAbsStats {
  double sum_abs = 0.0;  // Σ |x|
  double sum_sq = 0.0;   // Σ x²
  uint64_t finite = 0;   // number of finite entries
  uint64_t nonfinite = 0;
};

inline FiniteAbsStats finite_abs_stats(std::span<const float> x) {
  FiniteAbsStats st;
  st.sum_abs = ordered_sum(x.size(), [&](size_t i) { return finite_abs(x[i]); });
  st.sum_sq = ordered_sum(x.size(), [&](size_t i) {
    const double v = finite_abs(x[i]);
    return v * v;
  });
  for (float v : x) st.finite += std::isfinite(v) ? 1 : 0;
  st.nonfinite = x.size() - st.finite;
  return st;
}

}  // namespace deltaedit::util
