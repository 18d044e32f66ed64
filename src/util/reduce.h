// f64 reductions in a fixed order: indices are cut into blocks of kReduceBlock, each block is
// summed in index order, then the block sums are added in block order. A parallel caller that
// computes block sums on any threads and adds them in block order gets the same bits.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

namespace deltaedit::util {

inline constexpr size_t kReduceBlock = 65536;

inline size_t reduce_block_count(size_t n) { return (n + kReduceBlock - 1) / kReduceBlock; }

// Σ_{i in block b} term(i), in index order.
template <class Term>
double reduce_block(size_t n, size_t b, Term&& term) {
  const size_t begin = b * kReduceBlock, end = std::min(n, begin + kReduceBlock);
  double s = 0.0;
  for (size_t i = begin; i < end; ++i) s += static_cast<double>(term(i));
  return s;
}

// Σ_{i<n} term(i) in the fixed block order.
template <class Term>
double ordered_sum(size_t n, Term&& term) {
  double total = 0.0;
  const size_t blocks = reduce_block_count(n);
  for (size_t b = 0; b < blocks; ++b) total += reduce_block(n, b, term);
  return total;
}

// ordered_sum fed one term at a time, in index order, possibly across pieces: add(term, index)
// for index = 0, 1, 2, ...; sum() equals ordered_sum over the terms seen (for sums of
// non-negative terms, and of any terms when the count is not a multiple of kReduceBlock).
struct IndexOrderedSum {
  double total = 0.0, block = 0.0;
  void add(double term, uint64_t index) {
    block += term;
    if ((index + 1) % kReduceBlock == 0) {
      total += block;
      block = 0.0;
    }
  }
  double sum() const { return total + block; }
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
  return ordered_sum(n, [&](size_t i) { return static_cast<double>(a[i]) * static_cast<double>(b[i]); });
}

// Statistics of |x| over the finite entries only (NaN and ±Inf are counted apart).
struct FiniteAbsStats {
  double sum_abs = 0.0;  // Σ |x|
  double sum_sq = 0.0;   // Σ x²
  uint64_t finite = 0;   // number of finite entries
  uint64_t nonfinite = 0;
};

inline FiniteAbsStats finite_abs_stats(std::span<const float> x) {
  FiniteAbsStats st;
  st.sum_abs = ordered_sum(x.size(), [&](size_t i) {
    return std::isfinite(x[i]) ? std::fabs(static_cast<double>(x[i])) : 0.0;
  });
  st.sum_sq = ordered_sum(x.size(), [&](size_t i) {
    const double v = x[i];
    return std::isfinite(x[i]) ? v * v : 0.0;
  });
  for (float v : x) st.finite += std::isfinite(v) ? 1 : 0;
  st.nonfinite = x.size() - st.finite;
  return st;
}

}  // namespace deltaedit::util
