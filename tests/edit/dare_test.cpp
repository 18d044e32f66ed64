// dare, drop and biased: closed-form identities of Δ' = k·M⊙Δ + (1−k·p)/(1−p)·(1−M)⊙Δ.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "edit_test_util.h"
#include "util/error.h"

namespace deltaedit::edit {
namespace {
using namespace edit_test;

// A delta without zeros, so a zero output identifies a dropped entry.
std::vector<float> nonzero_delta(size_t n, uint64_t seed) {
  std::vector<float> v = gaussian(n, seed);
  for (float& x : v) {
    if (x == 0.0f) x = 1e-3f;
  }
  return v;
}

TEST(Dare, KOneIsIdentity) {
  const std::vector<float> d = nonzero_delta(10000, 1);
  for (const char* spec : {"dare:p=0.5,k=1", "dare:p=0.9,k=1", "dare:p=0.1,k=1,rescale=l1"}) {
    EXPECT_TRUE(same_bytes(edited(spec, d), d)) << spec;
  }
}

TEST(Dare, PZeroIsIdentity) {
  const std::vector<float> d = nonzero_delta(10000, 2);
  for (const char* spec : {"dare:p=0,k=0", "dare:p=0,k=-3", "dare:p=0,rescale=l1", "drop:p=0"}) {
    EXPECT_TRUE(same_bytes(edited(spec, d), d)) << spec;
  }
}

TEST(Dare, KZeroIsDare) {
  const std::vector<float> d = nonzero_delta(100000, 3);
  const double p = 0.7;
  const std::vector<float> out = edited("dare:p=0.7,k=0", d);
  const std::vector<float> dropped = edited("drop:p=0.7", d);
  const float c = static_cast<float>(1.0 / (1.0 - p));
  size_t zeros = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    if (out[i] == 0.0f) {
      ++zeros;
      EXPECT_EQ(dropped[i], 0.0f);  // drop uses the same mask for the same (seed, name, op index)
    } else {
      EXPECT_EQ(out[i], d[i] * c);
      EXPECT_EQ(dropped[i], d[i]);
    }
  }
  // zeros ~ Binomial(n, p): sd = sqrt(n p (1−p)) ≈ 145; 5 sd bound.
  EXPECT_NEAR(double(zeros), p * d.size(), 5 * std::sqrt(d.size() * p * (1 - p)));
}

TEST(Dare, IncrementWithFixedMask) {
  // Recover M from the k=0 run (same seed ⇒ same mask), then check for other k that
  // D = Δ' − Δ = (k−1)(M−p)/(1−p)⊙Δ. Δ' is f32(mult)·Δ rounded: two roundings of relative size
  // ≤ 2^-24 each, so |D_f32 − D_exact| ≤ 2^-22·|Δ'_exact| is a safe bound.
  const std::vector<float> d = nonzero_delta(50000, 4);
  for (double p : {0.1, 0.5, 0.9}) {
    const std::string base = "dare:p=" + std::to_string(p);
    const std::vector<float> k0 = edited(base + ",k=0", d);
    for (double k : {-1.0, -0.5, 0.5, 0.8, 2.5}) {
      const std::vector<float> out = edited(base + ",k=" + std::to_string(k), d);
      for (size_t i = 0; i < d.size(); ++i) {
        const double m = k0[i] == 0.0f ? 1.0 : 0.0;
        const double inc = (k - 1) * (m - p) / (1 - p) * d[i];
        const double exact_out = d[i] + inc;
        ASSERT_NEAR(double(out[i]) - d[i], inc, std::ldexp(std::fabs(exact_out), -22) + 1e-30)
            << "p=" << p << " k=" << k << " i=" << i;
      }
    }
  }
}

TEST(Dare, MultiplierMoments) {
  // The multiplier X = Δ'/Δ is k with probability p and c = (1−kp)/(1−p) otherwise:
  // E[X] = kp + (1−kp) = 1 and Var X = p(1−p)(k−c)² = (1−k)²p/(1−p) =: σ², since k−c = (k−1)/(1−p).
  // Sample mean over N: sd σ/√N, bound 5σ/√N.
  // Sample variance of a two-point law (values a, b; a−b = (k−1)/(1−p)): the fourth central
  // moment is μ4 = (a−b)⁴p(1−p)((1−p)³+p³), so sd(s²) ≈ sqrt((μ4 − σ⁴)/N) with
  // μ4 − σ⁴ = (a−b)⁴p(1−p)(1−2p)². Exactly, s² − σ² = (1−2p)(a−b)²(p̂−p) − (a−b)²(p̂−p)²: the
  // first term is that normal part, bound 5 sd; the second is σ²·χ²₁/N in distribution (it alone
  // remains at p = 1/2), bound 25σ²/N (χ²₁ = 25 is the square of a 5-sigma normal deviation).
  const size_t n = 1000000;
  const std::vector<float> ones(n, 1.0f);
  struct Case {
    double p, k;
  };
  for (Case cs : {Case{0.3, 0.5}, Case{0.9, -1.0}, Case{0.5, 0.0}, Case{0.7, 1.5}}) {
    const std::string spec = "dare:p=" + std::to_string(cs.p) + ",k=" + std::to_string(cs.k);
    const std::vector<float> x = edited(spec, ones, {}, 99);
    double s1 = 0, s2 = 0;
    for (float v : x) s1 += v;
    const double mean = s1 / n;
    for (float v : x) s2 += (v - mean) * (v - mean);
    const double var = s2 / n;
    const double p = cs.p, k = cs.k;
    const double sigma2 = (1 - k) * (1 - k) * p / (1 - p);
    const double ab = (k - 1) / (1 - p);
    const double m4_minus = std::pow(ab, 4) * p * (1 - p) * (1 - 2 * p) * (1 - 2 * p);
    EXPECT_NEAR(mean, 1.0, 5 * std::sqrt(sigma2 / n)) << spec;
    EXPECT_NEAR(var, sigma2, 5 * std::sqrt(m4_minus / n) + 25 * sigma2 / n) << spec;
  }
}

TEST(Dare, PrefixInvariance) {
  // Draws are keyed by element index: editing a prefix gives the prefix of the full edit
  // (so chunking and threads cannot change results).
  const std::vector<float> d = nonzero_delta(10000, 5);
  const std::vector<float> full = edited("dare:p=0.6,k=0.3", d);
  const std::vector<float> head =
      edited("dare:p=0.6,k=0.3", std::vector<float>(d.begin(), d.begin() + 777));
  EXPECT_TRUE(std::equal(head.begin(), head.end(), full.begin()));
}

TEST(Dare, MaskDependsOnSeedNameAndOpIndex) {
  const std::vector<float> d = nonzero_delta(4096, 6);
  const std::vector<float> a = edited("dare:p=0.5", d, {}, 1, "w", 0);
  EXPECT_TRUE(same_bytes(a, edited("dare:p=0.5", d, {}, 1, "w", 0)));
  EXPECT_FALSE(same_bytes(a, edited("dare:p=0.5", d, {}, 2, "w", 0)));
  EXPECT_FALSE(same_bytes(a, edited("dare:p=0.5", d, {}, 1, "w2", 0)));
  EXPECT_FALSE(same_bytes(a, edited("dare:p=0.5", d, {}, 1, "w", 1)));
}

TEST(Dare, POneIsUsageError) {
  try {
    op("dare:p=1");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(std::string(e.what()).find("'p'"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(op("dare:p=0.999999,k=-7.5"));
}

TEST(Dare, L1RescaleKeepsL1Norm) {
  const std::vector<float> d = nonzero_delta(100000, 7);
  double before = 0;
  for (float v : d) before += std::fabs(v);
  for (const char* spec : {"dare:p=0.9,rescale=l1", "dare:p=0.5,k=0.5,rescale=l1"}) {
    const std::vector<float> out = edited(spec, d);
    double after = 0;
    for (float v : out) after += std::fabs(v);
    // k ≥ 0: Σ|Δ'| = k·Σ_M|Δ| + c·Σ_{1−M}|Δ| = Σ|Δ| up to f32 rounding of each product.
    EXPECT_NEAR(after / before, 1.0, 1e-6) << spec;
  }
  // The same mask as rescale=paper: zeros at the same places for k=0.
  const std::vector<float> paper = edited("dare:p=0.9", d), l1 = edited("dare:p=0.9,rescale=l1", d);
  for (size_t i = 0; i < d.size(); ++i) EXPECT_EQ(paper[i] == 0.0f, l1[i] == 0.0f);
}

TEST(Dare, L1RescaleInPiecesUsesTheDrawnMaskAndTheL1Multiplier) {
  // The observe pass keeps the mask it draws as bits and the apply pass reads them, here in
  // pieces that start and end inside 64-entry words. Reference: the mask of rescale=paper (which
  // draws it from the keyed stream while it applies), and c = (Σ_M|Δ| + Σ_{1−M}|Δ| − k·Σ_M|Δ|) /
  // Σ_{1−M}|Δ| computed here in f64 (any order: c is rounded to f32, and the sums' order moves
  // it by far less than an f32 step but for a rare tie, which the bound below allows).
  const std::vector<float> d = nonzero_delta(3 * 4096 + 77, 21);
  const double k = 0.25;
  const std::vector<float> paper = edited("dare:p=0.6,k=0", d);
  const std::unique_ptr<Op> o = op("dare:p=0.6,k=0.25,rescale=l1");
  const ObservingOp* obs = as_observing(*o);
  ASSERT_NE(obs, nullptr);
  const std::vector<int64_t> shape = {int64_t(d.size())};
  TensorContext ctx;  // as edited() makes it
  ctx.name = "t";
  ctx.shape = shape;
  ctx.seed = 1;
  ctx.op_index = 0;
  for (size_t piece : {size_t(1), size_t(63), size_t(100), size_t(4096)}) {
    auto st = obs->observe_begin(ctx);
    for (size_t at = 0; at < d.size(); at += piece)
      obs->observe(*st, std::span<const float>(d.data() + at, std::min(piece, d.size() - at)), at);
    EXPECT_FALSE(obs->observe_again(*st));
    obs->observe_end(*st);
    std::vector<float> out = d;
    for (size_t at = 0; at < out.size(); at += piece)
      obs->apply_observed(*st, std::span<float>(out.data() + at, std::min(piece, out.size() - at)),
                          at, ctx);
    double sel = 0, kept = 0;
    for (size_t i = 0; i < d.size(); ++i) (paper[i] == 0.0f ? sel : kept) += std::fabs(d[i]);
    const float cf = float((sel + kept - k * sel) / kept), kf = float(k);
    size_t off = 0;
    for (size_t i = 0; i < d.size(); ++i) {
      const float want = d[i] * (paper[i] == 0.0f ? kf : cf);
      if (out[i] != want) ++off;
    }
    EXPECT_EQ(off, 0u) << "piece " << piece;
  }
  // The mask is kept up to 2^26 entries (8 MiB of bits); a larger tensor draws it again.
  EXPECT_EQ(o->workspace_bytes(std::vector<int64_t>{int64_t(1) << 26}), uint64_t(1) << 23);
  EXPECT_EQ(o->workspace_bytes(std::vector<int64_t>{(int64_t(1) << 26) + 1}), 0u);
  EXPECT_EQ(op("dare:p=0,rescale=l1")->workspace_bytes(std::vector<int64_t>{4096}), 0u);
}

TEST(Drop, POneZeroes) {
  const std::vector<float> out = edited("drop:p=1", nonzero_delta(1000, 8));
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(Biased, ByDeltaMatchesFormula) {
  const std::vector<float> d = nonzero_delta(20000, 9);
  const double n_neg = std::count_if(d.begin(), d.end(), [](float v) { return v < 0; });
  const double p = n_neg / d.size();
  for (double k : {0.5, 0.7, 1.3, -1.0}) {
    const std::vector<float> out = edited("biased:k=" + std::to_string(k), d);
    const float kf = float(k), cf = float((1 - k * p) / (1 - p));
    double mult_sum = 0;
    for (size_t i = 0; i < d.size(); ++i) {
      EXPECT_EQ(out[i], d[i] * (d[i] < 0 ? kf : cf));
      mult_sum += double(out[i]) / d[i];
    }
    // Σ multipliers = k·|M| + c·(n−|M|) = n exactly in real arithmetic; each multiplier is
    // rounded to f32 (and each product once more): relative error ≤ 2^-23.
    EXPECT_NEAR(mult_sum / d.size(), 1.0, 2e-7 * std::max(1.0, std::fabs(k))) << "k=" << k;
  }
}

TEST(Biased, EdgeFractions) {
  std::vector<float> pos(100, 0.5f), neg(100, -0.5f);
  EXPECT_TRUE(same_bytes(edited("biased:k=0.3", pos), pos));   // p = 0: identity
  const std::vector<float> out = edited("biased:k=0.3", neg);  // p = 1: Δ' = k·Δ
  for (float v : out) EXPECT_EQ(v, -0.5f * 0.3f);
  EXPECT_TRUE(same_bytes(edited("biased:k=1", nonzero_delta(100, 1)), nonzero_delta(100, 1)));
}

TEST(Biased, ByGradUsesSignsOfDeltaAndGradient) {
  const auto o = op("biased:by=grad,k=0.5");
  EXPECT_TRUE(o->needs_grad());
  EXPECT_FALSE(op("biased")->needs_grad());
  // Products that underflow in f32 still count by sign; zeros are never selected.
  const std::vector<float> d = {1e-30f, -2.0f, 3.0f, -4.0f, 0.0f, 5.0f};
  const std::vector<float> g = {-1e-30f, -1.0f, 1.0f, 1.0f, -1.0f, 0.0f};
  const EditRun r = run(*o, d, {}, 1, "t", 0, g);
  // Selected: 0 and 3 → p = 2/6; c = (1 − 0.5·p)/(1 − p) = 1.25.
  const float cf = float((1 - 0.5 / 3) / (1 - 1.0 / 3));
  EXPECT_EQ(r.out[0], d[0] * 0.5f);
  EXPECT_EQ(r.out[1], d[1] * cf);
  EXPECT_EQ(r.out[2], d[2] * cf);
  EXPECT_EQ(r.out[3], d[3] * 0.5f);
  EXPECT_EQ(r.out[4], 0.0f);
  EXPECT_EQ(r.out[5], d[5] * cf);
}

TEST(Biased, ByGradWithoutGradientIsError) {
  const auto o = op("biased:by=grad");
  try {
    run(*o, {1.0f, 2.0f});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_EQ(e.tensor(), "t");
  }
}

}  // namespace
}  // namespace deltaedit::edit
