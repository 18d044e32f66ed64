// Delta statistics of SPEC §4, accumulated in f64 in a fixed order (thread-count independent).
//
// Summation order: element g of a tensor (g counted from the first element ever added to the
// accumulator) goes to lane g % kLanes; each lane adds its elements in index order; the lanes
// are folded into the totals in lane order when the statistics are read (or merged). The result
// therefore depends only on the element sequence, not on how it was cut into add() calls, nor on
// which thread ran them.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deltaedit::analysis {

inline constexpr size_t kAccumLanes = 4;

// Running sums for Δ = post − base over one tensor (or a whole model, by merge()).
struct DeltaAccum {
  uint64_t n = 0, positive = 0, zero = 0, nonfinite = 0;
  double sum = 0, sumsq = 0, sumabs = 0, maxabs = 0, base_sumsq = 0;
  // Accumulate a chunk: base and post in f32, same length.
  void add(std::span<const float> base, std::span<const float> post);
  // The same for BF16 inputs given as raw bit patterns (decoded on the fly; identical result to
  // add() on the decoded values).
  void add_bf16(std::span<const uint16_t> base, std::span<const uint16_t> post);
  // Adds another accumulator's folded totals to this one's totals.
  void merge(const DeltaAccum& o);
  // A copy whose totals include the pending lanes (and whose lanes are empty).
  DeltaAccum folded() const;

  // Per-lane partial sums not yet folded into the totals above.
  struct Lanes {
    double s[kAccumLanes] = {}, sq[kAccumLanes] = {}, sa[kAccumLanes] = {}, mx[kAccumLanes] = {},
           bsq[kAccumLanes] = {};
    uint64_t pos[kAccumLanes] = {}, zer[kAccumLanes] = {}, bad[kAccumLanes] = {};
  } lanes;
};

struct DeltaStats {
  uint64_t n = 0;
  double norm = 0, rel_norm = 0, mean = 0, std = 0, mean_abs = 0, max_abs = 0;
  double frac_positive = 0, frac_zero = 0;
  uint64_t nonfinite = 0;
  static DeltaStats from(const DeltaAccum& a);
  nlohmann::json to_json() const;
};

// Statistics of an edit: Δ (original delta) against Δ' (edited delta), D = Δ' − Δ.
// Same lane scheme as DeltaAccum.
struct EditAccum {
  uint64_t n = 0, sign_agree = 0, nonzero_pairs = 0, nonfinite = 0;
  double delta_sumsq = 0, edited_sumsq = 0, d_sumsq = 0, dot = 0;
  void add(std::span<const float> delta, std::span<const float> edited);
  void merge(const EditAccum& o);
  EditAccum folded() const;

  struct Lanes {
    double dsq[kAccumLanes] = {}, esq[kAccumLanes] = {}, dd[kAccumLanes] = {}, dot[kAccumLanes] = {};
    uint64_t agree[kAccumLanes] = {}, nz[kAccumLanes] = {}, bad[kAccumLanes] = {};
  } lanes;
};

struct EditStats {
  double d_over_delta = 0;   // ‖D‖/‖Δ‖
  double intensity = 0;      // ‖D‖²/‖Δ‖²
  double cosine = 0;         // cos(Δ', Δ)
  double sign_agreement = 0; // fraction of entries where sign(Δ') == sign(Δ), over entries with Δ ≠ 0
  uint64_t nonfinite = 0;
  static EditStats from(const EditAccum& a);
  nlohmann::json to_json() const;
};

}  // namespace deltaedit::analysis
