// bitdelta: plain (bits=0) and multi-bit variants, statistics, sign(0), row granularity.
#include <algorithm>
#include <cmath>
#include <set>

#include <gtest/gtest.h>

#include "edit_test_util.h"

namespace deltaedit::edit {
namespace {
using namespace edit_test;

float sgn_times(float x, float v) { return x > 0 ? v : x < 0 ? -v : 0.0f; }

TEST(BitDelta, PlainMean) {
  const std::vector<float> d = {1, -2, 3, -4, 0, 6};
  const float mean = float((1 + 2 + 3 + 4 + 0 + 6) / 6.0);
  const std::vector<float> out = edited("bitdelta", d);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(out[i], sgn_times(d[i], mean));
  EXPECT_EQ(out[4], 0.0f);
  // s multiplies the statistic (rounded once).
  const std::vector<float> s2 = edited("bitdelta:s=2.5", d);
  EXPECT_EQ(s2[0], float(2.5 * 16 / 6.0));
  // sign0=plus maps zeros to +scale.
  EXPECT_EQ(edited("bitdelta:sign0=plus", d)[4], mean);
}

TEST(BitDelta, MedianAndRms) {
  const std::vector<float> odd = {5, -1, 3, -9, 2};  // |Δ| sorted: 1 2 3 5 9
  EXPECT_EQ(edited("bitdelta:stat=median", odd)[0], 3.0f);
  const std::vector<float> even = {5, -1, 3, -9};  // 1 3 5 9 → (3+5)/2
  EXPECT_EQ(edited("bitdelta:stat=median", even)[1], -4.0f);
  const std::vector<float> r = {3, -4};  // rms = sqrt((9+16)/2)
  EXPECT_EQ(edited("bitdelta:stat=rms", r)[0], float(std::sqrt(12.5)));
  EXPECT_EQ(edited("bitdelta:stat=rms", r)[1], -float(std::sqrt(12.5)));
}

TEST(BitDelta, BitsZeroEqualsPlain) {
  const std::vector<float> d = gaussian(5000, 1);
  for (const char* stat : {"mean", "median", "rms"}) {
    const std::string plain = std::string("bitdelta:stat=") + stat;
    EXPECT_TRUE(same_bytes(edited(plain + ",bits=0", d), edited(plain, d)));
    // Hand computation of the statistic.
    std::vector<double> m;
    for (float v : d) m.push_back(std::fabs(v));
    double st = 0;
    if (std::string(stat) == "mean") {
      for (double v : m) st += v;
      st /= m.size();
    } else if (std::string(stat) == "rms") {
      for (double v : m) st += v * v;
      st = std::sqrt(st / m.size());
    } else {
      std::sort(m.begin(), m.end());
      st = 0.5 * (m[m.size() / 2 - 1] + m[m.size() / 2]);
    }
    const std::vector<float> out = edited(plain, d);
    for (size_t i = 0; i < d.size(); ++i) ASSERT_NEAR(out[i], sgn_times(d[i], float(st)), 1e-12) << stat;
  }
}

TEST(BitDelta, ManyBitsIsIdentity) {
  // 200 entries, 256 blocks: every non-empty block holds one value.
  const std::vector<float> d = gaussian(200, 2);
  EXPECT_EQ(edited("bitdelta:bits=8", d), d);
  EXPECT_EQ(edited("bitdelta:bits=8,stat=median", d), d);
  EXPECT_EQ(edited("bitdelta:bits=8,stat=rms", d), d);
}

TEST(BitDelta, OneBitBlocks) {
  const std::vector<float> d = {1, 2, 3, 4, -5, -6, 7, 8};
  EXPECT_EQ(edited("bitdelta:bits=1", d), (std::vector<float>{2.5f, 2.5f, 2.5f, 2.5f, -6.5f, -6.5f, 6.5f, 6.5f}));
  EXPECT_EQ(edited("bitdelta:bits=2", d), (std::vector<float>{1.5f, 1.5f, 3.5f, 3.5f, -5.5f, -5.5f, 7.5f, 7.5f}));
}

TEST(BitDelta, EqualCountBlocks) {
  // 1003 entries in 4 blocks: sizes ⌊(j+1)n/4⌋ − ⌊jn/4⌋ = 250, 251, 251, 251; a block's values are
  // contiguous in |Δ| order and each |Δ'| is its block's mean.
  const std::vector<float> d = gaussian(1003, 3);
  const std::vector<float> out = edited("bitdelta:bits=2", d);
  std::vector<size_t> order(d.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return std::fabs(d[a]) < std::fabs(d[b]); });
  const size_t bounds[5] = {0, 250, 501, 752, 1003};
  for (int j = 0; j < 4; ++j) {
    double sum = 0;
    for (size_t t = bounds[j]; t < bounds[j + 1]; ++t) sum += std::fabs(d[order[t]]);
    const float mean = float(sum / double(bounds[j + 1] - bounds[j]));
    for (size_t t = bounds[j]; t < bounds[j + 1]; ++t) {
      EXPECT_NEAR(std::fabs(out[order[t]]), mean, 1e-12);
      EXPECT_EQ(std::signbit(out[order[t]]), std::signbit(d[order[t]]));
    }
  }
}

TEST(BitDelta, MoreBitsNeverWorse) {
  const std::vector<float> d = gaussian(10000, 4);
  double prev = INFINITY;
  for (int b = 0; b <= 6; ++b) {
    const std::vector<float> out = edited("bitdelta:bits=" + std::to_string(b), d);
    double err = 0;
    for (size_t i = 0; i < d.size(); ++i) err += (out[i] - d[i]) * double(out[i] - d[i]);
    EXPECT_LE(err, prev * (1 + 1e-9)) << "bits=" << b;
    prev = err;
  }
}

TEST(BitDelta, RowGranularity) {
  const std::vector<float> d = {1, -3, 2, -2, 10, 0};  // rows {1,-3,2}, {-2,10,0}
  const std::vector<float> out = edited("bitdelta:granularity=row", d, {2, 3});
  EXPECT_EQ(out, (std::vector<float>{2, -2, 2, -4, 4, 0}));
  const std::vector<float> out1 = edited("bitdelta:granularity=row,bits=1", d, {2, 3});
  // row 0: sorted 1,2,3 → blocks [0,1) {1}, [1,3) {2,3} → 2.5; row 1: 0 | 2,10 → 6.
  EXPECT_EQ(out1, (std::vector<float>{1, -2.5f, 2.5f, -6, 6, 0}));
}

TEST(BitDelta, NonFinitePassThrough) {
  const std::vector<float> d = {1, NAN, -3, INFINITY};
  for (const char* spec : {"bitdelta", "bitdelta:bits=1", "bitdelta:stat=median", "bitdelta:granularity=row"}) {
    const std::vector<float> out = edited(spec, d, {2, 2});
    EXPECT_TRUE(std::isnan(out[1])) << spec;
    EXPECT_EQ(out[3], INFINITY) << spec;
    EXPECT_TRUE(std::isfinite(out[0]) && std::isfinite(out[2])) << spec;
  }
  EXPECT_EQ(edited("bitdelta", d)[0], 2.0f);
}

}  // namespace
}  // namespace deltaedit::edit
