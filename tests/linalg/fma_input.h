// Deterministic low-rank factors for the contraction test, from integer arithmetic only (the same
// values in every build, whatever its floating-point flags).
#pragma once
#include <cstdint>

#include "linalg/lowrank.h"

namespace deltaedit::testing {

// Values in (-1, 1) with full 24-bit mantissas, so that a fused multiply-add (one rounding)
// and a multiply then add (two roundings) give different f32 results.
inline linalg::LowRankFactors contraction_probe_factors() {
  linalg::LowRankFactors f;
  f.rows = 67;
  f.cols = 131;
  f.rank = 9;
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state] {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const int32_t m = int32_t(state >> 40) - (1 << 23);  // 24 bits, signed
    return float(m) / float(1 << 23);
  };
  f.u.resize(size_t(f.rows * f.rank));
  f.s.resize(size_t(f.rank));
  f.v.resize(size_t(f.cols * f.rank));
  for (auto& x : f.u) x = next();
  for (auto& x : f.s) x = 1.0f + next();
  for (auto& x : f.v) x = next();
  return f;
}

}  // namespace deltaedit::testing
