// The fixed reduction order (util/reduce.h): its vector paths against the order written out.
#include "util/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace deltaedit::util {
namespace {

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The order as reduce.h states it: blocks of kReduceBlock; in a block term i to lane i mod 16,
// each lane in index order from +0; lanes folded in halves; block sums added in order from +0.
double by_definition(const std::vector<float>& x, bool squares = false) {
  double total = 0.0;
  for (size_t b = 0; b < x.size(); b += kReduceBlock) {
    double lane[kReduceLanes] = {};
    for (size_t i = b; i < std::min(x.size(), b + kReduceBlock); ++i)
      lane[(i - b) % kReduceLanes] += squares ? double(x[i]) * double(x[i]) : double(x[i]);
    for (size_t w = kReduceLanes / 2; w >= 1; w /= 2)
      for (size_t k = 0; k < w; ++k) lane[k] += lane[k + w];
    total += lane[0];
  }
  return total;
}

std::vector<float> terms(size_t n, uint32_t seed) {
  // Magnitudes over many binades, so any change of order changes the bits.
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> ex(-8, 8);
  std::vector<float> x(n);
  for (auto& v : x) v = std::ldexp(nd(g), ex(g));
  return x;
}

TEST(BlockedSum, AddF32InAnyPiecesIsTheDefinedOrder) {
  for (size_t n : {size_t(5), size_t(4099), size_t(2 * kReduceBlock + 37)}) {
    const auto x = terms(n, uint32_t(n));
    const double want = by_definition(x);
    for (uint32_t seed : {1u, 2u, 3u}) {
      std::mt19937 g(seed);
      std::uniform_int_distribution<size_t> len(0, seed == 3 ? 9000 : 40);
      BlockedSum f32, generic;
      for (size_t i = 0; i < n;) {
        const size_t m = std::min(len(g), n - i);
        f32.add_f32(std::span<const float>(x.data() + i, m));
        generic.add(m, [&](size_t j) { return double(x[i + j]); });
        i += m;
      }
      EXPECT_TRUE(same_bits(f32.sum(), want)) << n << " " << seed;
      EXPECT_TRUE(same_bits(generic.sum(), want)) << n << " " << seed;
      EXPECT_EQ(f32.count(), n);
    }
  }
}

TEST(BlockedSum, AddF32SquaresInAnyPiecesIsTheDefinedOrder) {
  for (size_t n : {size_t(3), size_t(4099), size_t(2 * kReduceBlock + 37)}) {
    const auto x = terms(n, uint32_t(n) + 7);
    const double want = by_definition(x, true);
    EXPECT_FALSE(same_bits(want, by_definition(x))) << n;  // squares, not the terms
    for (uint32_t seed : {1u, 2u, 3u}) {
      std::mt19937 g(seed);
      std::uniform_int_distribution<size_t> len(0, seed == 3 ? 9000 : 40);
      BlockedSum sq;
      for (size_t i = 0; i < n;) {
        const size_t m = std::min(len(g), n - i);
        sq.add_f32_squares(std::span<const float>(x.data() + i, m));
        i += m;
      }
      EXPECT_TRUE(same_bits(sq.sum(), want)) << n << " " << seed;
      EXPECT_EQ(sq.count(), n);
    }
  }
}

TEST(BlockedSum, AddFiniteAbsIsTheSumOfFiniteMagnitudesInTheDefinedOrder) {
  const size_t n = kReduceBlock + 5000;
  auto x = terms(n, 77);
  for (size_t i = 3; i < n; i += 997)
    x[i] =
        (i % 2) ? std::numeric_limits<float>::quiet_NaN() : -std::numeric_limits<float>::infinity();
  std::vector<float> a(n);
  for (size_t i = 0; i < n; ++i) a[i] = std::isfinite(x[i]) ? std::fabs(x[i]) : 0.0f;
  for (bool squares : {false, true}) {
    BlockedSum s;
    for (size_t i = 0; i < n; i += 3001)
      s.add_finite_abs(std::span(x.data() + i, std::min<size_t>(3001, n - i)), squares);
    EXPECT_TRUE(same_bits(s.sum(), by_definition(a, squares))) << squares;
  }
}

TEST(FiniteAbs, F32FormAndCountMatchTheScalarDefinitions) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> x = {0.0f,
                          -0.0f,
                          1.5f,
                          -2.25f,
                          inf,
                          -inf,
                          nan,
                          -nan,
                          std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::denorm_min(),
                          -1e-40f};
  for (float v : terms(100, 9)) x.push_back(v);
  std::vector<float> out(x.size());
  finite_abs_f32(x.data(), out.data(), x.size());
  uint64_t finite = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_TRUE(same_bits(double(out[i]), finite_abs(x[i]))) << i;
    EXPECT_FALSE(std::signbit(out[i])) << i;
    finite += std::isfinite(x[i]);
  }
  EXPECT_EQ(count_finite(x), finite);
  EXPECT_EQ(finite, x.size() - 4);
}

}  // namespace
}  // namespace deltaedit::util
