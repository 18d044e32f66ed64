#include "linalg/lowrank.h"

#include <algorithm>
#include <string>

#include "util/error.h"

namespace deltaedit::linalg {

// Low-rank reconstruction: out[i, j] = Σ_t (U[i,t]·S[t])·V[j,t], accumulated in f32 in t order,
// single-threaded, one rounding per multiply and per add (no fused multiply-add), so every
// caller on a given build gets the same bits.

void reconstruct_lowrank(const LowRankFactors& f, std::span<float> out) {
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  const int64_t m = f.rows, n = f.cols, r = f.rank;
  if (m < 0 || n < 0 || r < 0 || static_cast<uint64_t>(m) * static_cast<uint64_t>(n) != out.size() ||
      f.u.size() != static_cast<size_t>(m * r) || f.s.size() != static_cast<size_t>(r) ||
      f.v.size() != static_cast<size_t>(n * r)) {
    throw Error(ErrorKind::Internal, "low-rank factors do not match: rows=" + std::to_string(m) +
                                       " cols=" + std::to_string(n) + " rank=" + std::to_string(r) +
                                       " |U|=" + std::to_string(f.u.size()) + " |S|=" +
                                       std::to_string(f.s.size()) + " |V|=" + std::to_string(f.v.size()) +
                                       " output=" + std::to_string(out.size()));
  }
  // Vᵀ (r × n) so the inner loop runs over contiguous output columns.
  std::vector<float> vt(static_cast<size_t>(r * n));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t t = 0; t < r; ++t) vt[static_cast<size_t>(t * n + j)] = f.v[static_cast<size_t>(j * r + t)];
  }
  for (int64_t i = 0; i < m; ++i) {
    float* row = out.data() + i * n;
    std::fill(row, row + n, 0.0f);
    for (int64_t t = 0; t < r; ++t) {
      const float a = f.u[static_cast<size_t>(i * r + t)] * f.s[static_cast<size_t>(t)];
      const float* vrow = vt.data() + t * n;
      for (int64_t j = 0; j < n; ++j) {
        const float prod = a * vrow[j];
        row[j] = row[j] + prod;
      }
    }
  }
}

}  // namespace deltaedit::linalg
