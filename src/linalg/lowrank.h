// Low-rank factors of a delta and their one reconstruction routine (shared by the lowrank op and
// delta packs, so an edit and a pack rebuild agree bit for bit).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace deltaedit::linalg {

// Low-rank factors U (rows×r, row-major), S (r), V (cols×r, row-major) with Δ' = U·diag(S)·Vᵀ.
struct LowRankFactors {
  int64_t rows = 0, cols = 0, rank = 0;
  std::vector<float> u, s, v;
};

// Δ' = U·diag(S)·Vᵀ in f32 by one fixed routine. Throws deltaedit::Error(Format) when the factor
// sizes do not match each other or `out`.
void reconstruct_lowrank(const LowRankFactors& f, std::span<float> out);

}  // namespace deltaedit::linalg
