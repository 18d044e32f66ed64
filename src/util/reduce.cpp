#include "util/reduce.h"

#include <bit>

#include "util/clones.h"

namespace deltaedit::util {

DELTAEDIT_CLONES void add_f32_to_lanes(double (&lane)[kReduceLanes], const float* x, size_t n) {
  double acc[kReduceLanes];
  for (size_t k = 0; k < kReduceLanes; ++k) acc[k] = lane[k];
  size_t i = 0;
  for (; i + kReduceLanes <= n; i += kReduceLanes)
    for (size_t k = 0; k < kReduceLanes; ++k) acc[k] += static_cast<double>(x[i + k]);
  for (size_t k = 0; i < n; ++i, ++k) acc[k] += static_cast<double>(x[i]);
  for (size_t k = 0; k < kReduceLanes; ++k) lane[k] = acc[k];
}

DELTAEDIT_CLONES void add_f32_squares_to_lanes(double (&lane)[kReduceLanes], const float* x,
                                               size_t n) {
  double acc[kReduceLanes];
  for (size_t k = 0; k < kReduceLanes; ++k) acc[k] = lane[k];
  size_t i = 0;
  for (; i + kReduceLanes <= n; i += kReduceLanes)
    for (size_t k = 0; k < kReduceLanes; ++k) {
      const double t = x[i + k];
      acc[k] += t * t;
    }
  for (size_t k = 0; i < n; ++i, ++k) {
    const double t = x[i];
    acc[k] += t * t;
  }
  for (size_t k = 0; k < kReduceLanes; ++k) lane[k] = acc[k];
}

// In bits, so the select vectorises: finite exactly when the magnitude bits are below Inf's.
DELTAEDIT_CLONES void finite_abs_f32(const float* x, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t a = std::bit_cast<uint32_t>(x[i]) & 0x7FFFFFFFu;
    out[i] = std::bit_cast<float>(a < 0x7F800000u ? a : 0u);
  }
}

DELTAEDIT_CLONES uint64_t count_finite(std::span<const float> x) {
  uint64_t n = 0;
  for (float v : x) n += (std::bit_cast<uint32_t>(v) & 0x7FFFFFFFu) < 0x7F800000u;
  return n;
}

void BlockedSum::add_finite_abs(std::span<const float> x, bool squares) {
  constexpr size_t kTile = 2048;
  float a[kTile];
  for (size_t o = 0; o < x.size(); o += kTile) {
    const size_t c = std::min(kTile, x.size() - o);
    finite_abs_f32(x.data() + o, a, c);
    add_f32_terms(std::span<const float>(a, c), squares);
  }
}

}  // namespace deltaedit::util
