// scale, permute, signflip, resample.
#include <algorithm>
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

#include "edit_test_util.h"
#include "util/error.h"

namespace deltaedit::edit {
namespace {
using namespace edit_test;

TEST(Scale, Formula) {
  const std::vector<float> d = gaussian(1000, 1);
  for (float v : edited("scale:alpha=-1", d)) EXPECT_EQ(v, 0.0f);  // the base
  EXPECT_TRUE(same_bytes(edited("scale:alpha=0", d), d));
  EXPECT_TRUE(same_bytes(edited("scale", d), d));
  const std::vector<float> out = edited("scale:alpha=0.5", d);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(out[i], d[i] * 1.5f);
  const std::vector<float> inter = edited("scale:alpha=-0.3", d);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(inter[i], d[i] * float(0.7));
}

TEST(Permute, PreservesMagnitudesAndSigns) {
  std::vector<float> d = gaussian(5000, 2);
  d[10] = 0.0f;
  d[11] = -0.0f;
  const std::vector<float> out = edited("permute", d);
  std::vector<float> a, b;
  for (size_t i = 0; i < d.size(); ++i) {
    EXPECT_EQ(std::signbit(out[i]), std::signbit(d[i])) << i;
    a.push_back(std::fabs(d[i]));
    b.push_back(std::fabs(out[i]));
  }
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
  size_t moved = 0;
  for (size_t i = 0; i < d.size(); ++i) moved += std::fabs(out[i]) != std::fabs(d[i]);
  EXPECT_GT(moved, d.size() * 9 / 10);
  EXPECT_TRUE(same_bytes(out, edited("permute", d)));
  EXPECT_FALSE(same_bytes(out, edited("permute", d, {}, 2)));
  // Every position is equally likely to receive any magnitude: position 0 of [0,1,…,9] over
  // 2000 names takes each value ~200 times (Binomial(2000, 0.1), sd ≈ 13.4; 5 sd bound).
  std::vector<float> ramp(10);
  for (int i = 0; i < 10; ++i) ramp[i] = float(i);
  int counts[10] = {};
  for (int t = 0; t < 2000; ++t) {
    std::string name = "w";
    name += std::to_string(t);
    ++counts[int(edited("permute", ramp, {}, 1, name)[0])];
  }
  for (int c : counts) EXPECT_NEAR(c, 200, 5 * 13.4);
}

TEST(SignFlip, FlipsFractionQ) {
  const size_t n = 200000;
  const std::vector<float> d = gaussian(n, 3);
  for (double q : {0.1, 0.5, 0.9}) {
    const std::vector<float> out = edited("signflip:q=" + std::to_string(q), d);
    size_t flipped = 0;
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::fabs(out[i]), std::fabs(d[i]));
      flipped += out[i] == -d[i] && d[i] != 0;
    }
    // flipped ~ Binomial(n, q): 5 sd bound.
    EXPECT_NEAR(double(flipped), q * n, 5 * std::sqrt(n * q * (1 - q))) << q;
  }
  EXPECT_TRUE(same_bytes(edited("signflip:q=0", d), d));
  const std::vector<float> all = edited("signflip:q=1", d);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(all[i], -d[i]);
}

TEST(SignFlip, MeanRescale) {
  const std::vector<float> d = gaussian(10000, 4);
  const std::vector<float> plain = edited("signflip:q=0.2", d), res = edited("signflip:q=0.2,rescale=mean", d);
  const float c = float(1.0 / 0.6);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(res[i], plain[i] * c);
  EXPECT_THROW(op("signflip:q=0.5,rescale=mean"), Error);
  EXPECT_THROW(op("signflip"), Error);  // q is required
}

TEST(Resample, UniformMagnitudes) {
  const size_t n = 200000;
  std::vector<float> d = gaussian(n, 5);
  d[0] = 0.0f;
  double mean_abs = 0;
  for (float v : d) mean_abs += std::fabs(v);
  mean_abs /= n;
  const std::vector<float> out = edited("resample", d);
  EXPECT_EQ(out[0], 0.0f);
  double s = 0;
  for (size_t i = 1; i < n; ++i) {
    ASSERT_EQ(std::signbit(out[i]), std::signbit(d[i]));
    ASSERT_LE(std::fabs(out[i]), 2 * mean_abs * (1 + 1e-6));
    s += std::fabs(out[i]);
  }
  // m ~ U(0, 2μ): mean μ, sd 2μ/√12; sample mean over n−1: 5 sd bound.
  EXPECT_NEAR(s / (n - 1), mean_abs, 5 * 2 * mean_abs / std::sqrt(12.0 * (n - 1)));
  const std::vector<float> s2 = edited("resample:s=2", d);
  double t = 0;
  for (float v : s2) t += std::fabs(v);
  EXPECT_NEAR(t / (n - 1), 2 * mean_abs, 5 * 4 * mean_abs / std::sqrt(12.0 * (n - 1)));
}

// Every redrawn magnitude is exactly 2μ·KeyedRng(seed, name, op_index).uniform(i) rounded once to
// f32 (SPEC: computed in f64, rounded once). The data are multiples of 2^-12 below 4, so Σ|Δ| is
// exact in f64 in any order and μ here is the op's μ bit for bit; zeros, NaN and ±Inf pass.
TEST(Resample, UniformDrawsAreTheKeyedStream) {
  const size_t n = 70001;  // crosses the vector kernels' blocks and leaves a tail
  const util::KeyedRng data(3, "test-data", 0);
  std::vector<float> d(n);
  for (size_t i = 0; i < n; ++i)
    d[i] = float(std::ldexp(std::floor(data.uniform(i) * 32768.0) - 16384.0, -12));
  d[5] = 0.0f;
  d[6] = -0.0f;
  d[7] = std::numeric_limits<float>::quiet_NaN();
  d[8] = std::numeric_limits<float>::infinity();
  double sum = 0;
  uint64_t finite = 0;
  for (float v : d)
    if (std::isfinite(v)) sum += std::fabs(double(v)), ++finite;
  const double mu = sum / double(finite);
  const util::KeyedRng rng(1, "w", 2);
  const std::vector<float> out = edited("resample", d, {}, 1, "w", 2);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(d[i]) || d[i] == 0.0f) {
      ASSERT_TRUE(same_bytes({out[i]}, {d[i]})) << i;
      continue;
    }
    const float m = static_cast<float>(2.0 * mu * rng.uniform(i));
    ASSERT_EQ(out[i], d[i] > 0 ? m : -m) << i;
  }
}

TEST(Resample, NormalMagnitudes) {
  const size_t n = 200000;
  const std::vector<float> d = gaussian(n, 6);
  double mu = 0;
  for (float v : d) mu += std::fabs(v);
  mu /= n;
  const std::vector<float> out = edited("resample:dist=normal,sigma=0.5", d);
  double s1 = 0, s2 = 0;
  for (size_t i = 0; i < n; ++i) {
    const double m = d[i] > 0 ? out[i] : -out[i];  // signed magnitude m_i
    s1 += m;
    s2 += m * m;
  }
  const double mean = s1 / n, var = s2 / n - mean * mean, sigma = 0.5 * mu;
  EXPECT_NEAR(mean, mu, 5 * sigma / std::sqrt(double(n)));
  // Sample variance of a normal: sd σ²·sqrt(2/n).
  EXPECT_NEAR(var, sigma * sigma, 5 * sigma * sigma * std::sqrt(2.0 / n));
  // With σ = μ about 16% of draws are negative; clip maps them to 0.
  const std::vector<float> clipped = edited("resample:dist=normal,clip=true", d);
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(clipped[i] == 0.0f || std::signbit(clipped[i]) == std::signbit(d[i]));
  const std::vector<float> raw = edited("resample:dist=normal", d);
  size_t flipped = 0;
  for (size_t i = 0; i < n; ++i) flipped += raw[i] != 0 && std::signbit(raw[i]) != std::signbit(d[i]);
  EXPECT_GT(flipped, n / 10);
}

}  // namespace
}  // namespace deltaedit::edit
