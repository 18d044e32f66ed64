// Deterministic draws for the zoo generators: one Philox stream per (seed, stream name), one
// element per record or document, one lane per draw within it. Every record is a pure function
// of (seed, stream, index), independent of how many records are generated or in which order.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "util/philox.h"

namespace deltaedit::zoo {

class Draws {
 public:
  Draws(uint64_t seed, std::string_view stream, uint64_t index) noexcept
      : rng_(seed, stream, 0), index_(index) {}

  // Uniform integer in [lo, hi] (requires lo <= hi).
  int uniform_int(int lo, int hi) noexcept {
    const auto span = static_cast<uint64_t>(static_cast<int64_t>(hi) - lo + 1);
    return lo + static_cast<int>(rng_.below(index_, span, lane_++));
  }

  // True with probability p.
  bool chance(double p) noexcept { return rng_.uniform(index_, lane_++) < p; }

  template <class T>
  const T& pick(std::span<const T> items) noexcept {
    return items[static_cast<std::size_t>(uniform_int(0, static_cast<int>(items.size()) - 1))];
  }

 private:
  util::KeyedRng rng_;
  uint64_t index_;
  uint32_t lane_ = 0;
};

}  // namespace deltaedit::zoo
