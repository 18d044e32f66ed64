// The task-vector family against a scalar f64 reference written from MERGE.md §2.1–2.2 and §3,
// closed forms, exact counts, statistics of the random sparsifiers, blocks, and bf16 rounding.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "merge_test_util.h"
#include "util/error.h"

namespace deltaedit::merge::test {
namespace {

enum class Kind { None, Magnitude, Random, Outliers, Della };

struct Spec {
  const char* name;
  bool consensus;
  Kind kind;
  bool normalize, rescale;  // defaults
};

const Spec kSpecs[] = {
    {"task_arithmetic", false, Kind::None, false, false},
    {"ties", true, Kind::Magnitude, true, false},
    {"dare_ties", true, Kind::Random, false, true},
    {"dare_linear", false, Kind::Random, false, true},
    {"breadcrumbs", false, Kind::Outliers, false, false},
    {"breadcrumbs_ties", true, Kind::Outliers, false, false},
    {"della", true, Kind::Della, true, true},
    {"della_linear", false, Kind::Della, false, true},
};

const Spec& spec(std::string_view name) {
  for (const Spec& s : kSpecs) {
    if (name == s.name) return s;
  }
  throw std::runtime_error("no spec");
}

double get(const Params& p, const char* k, double def) {
  auto it = p.find(k);
  return it == p.end() ? def : it->second;
}

// Stable order of indices by |τ| ascending (ties: lower index first).
std::vector<size_t> ascending(const std::vector<double>& tau) {
  std::vector<size_t> idx(tau.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](size_t a, size_t b) { return std::fabs(tau[a]) < std::fabs(tau[b]); });
  return idx;
}

// MERGE.md §2.2, §3, in f64 (F32 work: probabilities as f32, as the spec's work dtype says).
std::vector<double> ref_sparsify(std::vector<double> tau, Kind kind, const Params& p, bool rescale,
                                 const Case& c, const Model& m) {
  const size_t n = tau.size();
  const double d = get(p, "density", 1.0);
  const bool paper = c.conventions == Conventions::Paper;
  if (kind == Kind::None || d >= 1.0) return tau;
  std::vector<int> keep(n, 0);
  std::vector<double> scale(n, 1.0);
  if (kind == Kind::Magnitude) {
    const size_t k = static_cast<size_t>(d * static_cast<double>(n));
    std::vector<size_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(),
                     [&](size_t a, size_t b) { return std::fabs(tau[a]) > std::fabs(tau[b]); });
    for (size_t j = 0; j < k; ++j) keep[idx[j]] = 1;
  } else if (kind == Kind::Outliers) {
    const double g = get(p, "gamma", 0.01);
    const long kept = static_cast<long>(d * n), top0 = static_cast<long>(g * n);
    long top = top0, bot = static_cast<long>(n) - kept - top;
    if (bot < 0) {
      top += bot;
      bot = 0;
    }
    const std::vector<size_t> idx = ascending(tau);
    if (top > 0 || paper) {
      for (long j = bot; j < static_cast<long>(n) - top; ++j) keep[idx[j]] = 1;
    }
  } else if (kind == Kind::Random) {
    const double pk = paper ? d : static_cast<float>(d);
    for (size_t i = 0; i < n; ++i)
      keep[i] = drawn_keep(c.seed, c.name, m.index, RandomPurpose::DareKeep, i, pk);
    if (paper) std::fill(scale.begin(), scale.end(), 1.0 / d);
  } else if (kind == Kind::Della) {
    const double eps = get(p, "epsilon", 0.15);
    const size_t len = c.shape.size() >= 2 ? static_cast<size_t>(c.shape[1]) : n;
    const size_t rows = n / len;  // 1-D or 2-D cases only
    for (size_t r = 0; r < rows; ++r) {
      std::vector<double> row(tau.begin() + r * len, tau.begin() + (r + 1) * len);
      const std::vector<size_t> idx = ascending(row);
      for (size_t k = 0; k < len; ++k) {
        const double q = std::clamp(
            (d - eps) + 2 * eps * static_cast<double>(k) / static_cast<double>(len - 1), 0.0, 1.0);
        const size_t i = r * len + idx[k];
        keep[i] = drawn_keep(c.seed, c.name, m.index, RandomPurpose::DellaKeep, i,
                             paper ? q : static_cast<float>(q));
        scale[i] = 1.0 / q;
      }
    }
  }
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = keep[i] ? tau[i] : 0.0;
  if (!rescale) return out;
  if (paper && (kind == Kind::Random || kind == Kind::Della)) {
    for (size_t i = 0; i < n; ++i) out[i] *= scale[i];
    return out;
  }
  double b = 0, a = 0;
  for (size_t i = 0; i < n; ++i) {
    b += std::fabs(tau[i]);
    a += std::fabs(out[i]);
  }
  if (b < 1e-7 || a < 1e-7) return out;
  for (double& v : out) v *= b / a;
  return out;
}

// MERGE.md §2.1 (mergekit) and §3 (paper), in f64.
std::vector<double> ref_gta(std::string_view name, const Case& c) {
  const Spec& s = spec(name);
  const size_t n = count_of(c.shape);
  const bool paper = c.conventions == Conventions::Paper;
  const bool normalize = get(c.global, "normalize", s.normalize) != 0;
  const bool rescale = get(c.global, "rescale", s.rescale) != 0;
  const double lambda = get(c.global, "lambda", 1.0);
  std::vector<std::vector<double>> t;
  std::vector<double> w;
  for (const Model& m : c.models) {
    std::vector<double> tau(n);
    for (size_t i = 0; i < n; ++i) tau[i] = static_cast<double>(m.values[i]) - c.base->values[i];
    t.push_back(ref_sparsify(tau, s.kind, m.params, rescale, c, m));
    w.push_back(static_cast<float>(m.params.at("weight")));
  }
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    double mixed = 0, div = 0;
    if (s.consensus) {
      double vote = 0;
      for (size_t k = 0; k < t.size(); ++k) vote += paper ? t[k][i] : w[k] * t[k][i];
      const double g = vote >= 0 ? 1 : -1;
      int count = 0;
      for (size_t k = 0; k < t.size(); ++k) {
        const double sgn = paper ? t[k][i] : w[k] * t[k][i];
        if ((sgn > 0 && g > 0) || (sgn < 0 && g < 0)) {
          mixed += w[k] * t[k][i];
          div += w[k];
          ++count;
        }
      }
      if (paper) div = count;
      if (div == 0) div = 1;
    } else {
      for (size_t k = 0; k < t.size(); ++k) {
        mixed += w[k] * t[k][i];
        div += w[k];
      }
      if (std::fabs(div) < 1e-8) div = 1;
    }
    if (normalize) mixed /= div;
    out[i] = c.base->values[i] + lambda * mixed;
  }
  return out;
}

// Base on a 2^-10 grid, task vectors multiples of 1/16 in [−1, 1] with zeros and many equal
// magnitudes: x − b and the sums of binary weights are exact in f32, so decisions agree with f64.
Case quantized_case(std::vector<int64_t> shape, uint64_t seed) {
  Case c;
  c.shape = shape;
  const size_t n = count_of(shape);
  Model base;
  for (float v : gaussian(n, seed)) base.values.push_back(std::round(v * 1024.0f) / 1024.0f);
  c.base = base;
  const double weights[] = {0.75, -0.375, 1.25};
  const double dens[] = {0.5, 0.3, 0.8};
  for (uint32_t m = 0; m < 3; ++m) {
    Model x;
    x.index = m;
    const util::KeyedRng rng(seed + 100 + m, "q", 0);
    for (size_t i = 0; i < n; ++i) {
      const int k = static_cast<int>(rng.below(i, 33)) - 16;  // −16..16, zero 1 in 33
      x.values.push_back(base.values[i] + static_cast<float>(k) / 16.0f);
    }
    x.params = {{"weight", weights[m]}, {"density", dens[m]}, {"gamma", 0.05}, {"epsilon", 0.1}};
    c.models.push_back(x);
  }
  return c;
}

TEST(TaskArithmeticFamily, MatchesReference2D) {
  for (const Spec& s : kSpecs) {
    for (Conventions conv : {Conventions::Mergekit, Conventions::Paper}) {
      Case c = quantized_case({8, 13}, 3);
      c.conventions = conv;
      const Result r = run(s.name, c);
      expect_near_rel(r.out, ref_gta(s.name, c), 2e-6,
                      std::string(s.name) + (conv == Conventions::Paper ? " paper" : ""));
    }
  }
}

TEST(TaskArithmeticFamily, MatchesReference1DSmallWithLambdaAndFlags) {
  for (const Spec& s : kSpecs) {
    Case c = quantized_case({37}, 4);
    c.global = {{"lambda", 0.5},
                {"normalize", s.normalize ? 0.0 : 1.0},
                {"rescale", s.rescale ? 0.0 : 1.0}};
    const Result r = run(s.name, c);
    expect_near_rel(r.out, ref_gta(s.name, c), 2e-6, std::string(s.name) + " 1-D");
  }
}

TEST(TaskArithmeticFamily, MatchesReferenceGaussianNonBinaryWeights) {
  for (const Spec& s : kSpecs) {
    Case c;
    c.shape = {16, 64};
    c.base = Model{gaussian(1024, 11), {}, 0};
    const double w[] = {0.3, 0.55, -0.2};
    for (uint32_t m = 0; m < 3; ++m) {
      std::vector<float> x = gaussian(1024, 20 + m, 0.01);
      for (size_t i = 0; i < x.size(); ++i) x[i] += c.base->values[i];
      c.models.push_back(
          Model{x, {{"weight", w[m]}, {"density", 0.4}, {"epsilon", 0.2}, {"gamma", 0.02}}, m});
    }
    const Result r = run(s.name, c);
    // τ = x − b is rounded in f32 (the reference subtracts in f64): a relative error of ~1e-6 of
    // the base magnitude per element.
    expect_near_rel(r.out, ref_gta(s.name, c), 1e-5, s.name);
  }
}

TEST(TaskArithmeticFamily, OneModelWeightOneIsThatModel) {
  Case c;
  c.shape = {300};
  std::vector<float> b = gaussian(300, 1, 0.2, 1.5),
                     x = gaussian(300, 2, 0.2, 1.5);  // x/b in [1/2, 2]
  c.base = Model{b, {}, 0};
  c.models = {Model{x, {{"weight", 1.0}}, 1}};
  EXPECT_TRUE(same_bytes(run("task_arithmetic", c).out, x));
}

TEST(TaskArithmeticFamily, NoModelsGivesBase) {
  Case c;
  c.shape = {5};
  c.base = Model{{1, 2, 3, 4, 5}, {}, 0};
  for (const Spec& s : kSpecs)
    EXPECT_TRUE(same_bytes(run(s.name, c).out, c.base->values)) << s.name;
}

TEST(Ties, DensityOneAgreeingSignsIsNormalisedTaskArithmetic) {
  Case c;
  c.shape = {4, 25};
  c.base = Model{gaussian(100, 5), {}, 0};
  const double w[] = {0.5, 2.0, 1.5};
  std::vector<std::vector<float>> d;
  for (uint32_t m = 0; m < 3; ++m) {
    std::vector<float> x = gaussian(100, 30 + m, 0.1);
    for (size_t i = 0; i < 100; ++i)
      x[i] = c.base->values[i] + (i % 2 ? 1.0f : -1.0f) * (std::fabs(x[i]) + 0.01f);
    c.models.push_back(Model{x, {{"weight", w[m]}, {"density", 1.0}}, m});
  }
  std::vector<double> want(100);
  for (size_t i = 0; i < 100; ++i) {
    double s = 0;
    for (uint32_t m = 0; m < 3; ++m)
      s += w[m] * (static_cast<double>(c.models[m].values[i]) - c.base->values[i]);
    want[i] = c.base->values[i] + s / 4.0;
  }
  expect_near_rel(run("ties", c).out, want, 1e-6, "ties density 1");
}

TEST(Ties, TiesAtTheMagnitudeCutKeepTheLowerIndex) {
  Case c;
  c.shape = {6};
  c.base = Model{std::vector<float>(6, 0.0f), {}, 0};
  c.models = {Model{{1, -2, 2, 2, 0.5, -2}, {{"weight", 1.0}, {"density", 0.5}}, 0}};
  // k = int(0.5·6) = 3 of the four entries of magnitude 2: indices 1, 2, 3 win over 5.
  EXPECT_EQ(run("ties", c).out, (std::vector<float>{0, -2, 2, 2, 0, 0}));
}

TEST(Ties, KZeroIsAUsageErrorInMergekitAndZeroInPaper) {
  Case c;
  c.shape = {50};
  c.base = Model{std::vector<float>(50, 1.0f), {}, 0};
  c.models = {Model{gaussian(50, 1), {{"weight", 1.0}, {"density", 0.01}}, 0}};
  try {
    run("ties", c);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(std::string(e.what()).find(c.name), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("int(density·n) = 0"), std::string::npos) << e.what();
  }
  c.conventions = Conventions::Paper;
  const Result r = run("ties", c);
  EXPECT_EQ(r.out, c.base->values);
  ASSERT_EQ(r.warnings.size(), 1u);
}

TEST(Ties, PrecomputedThresholdKeepsMagnitudesAtOrAbove) {
  Case c;
  c.shape = {6};
  c.base = Model{std::vector<float>(6, 0.0f), {}, 0};
  Model m{{1, -2, 2, 2, 0.5, -2}, {{"weight", 1.0}, {"density", 0.1}}, 0};
  m.threshold = 1.0f;
  c.models = {m};
  EXPECT_EQ(run("ties", c).out, (std::vector<float>{1, -2, 2, 2, 0, -2}));
  EXPECT_TRUE(method("ties").pointwise(job_of(c)));
  c.models[0].threshold.reset();
  EXPECT_FALSE(method("ties").pointwise(job_of(c)));
}

TEST(Ties, NegativeWeightFlipsTheVote) {
  Case c;
  c.shape = {1};
  c.base = Model{{0.0f}, {}, 0};
  // τ = +1 (w 1) and −1 (w −2): weighted votes +1 and +2 → γ = +, both agree: M = 1 + 2 = 3,
  // D = 1 − 2 = −1 → −3 (mergekit). Paper: unweighted votes cancel (0 → +), only model 0 agrees,
  // M = 1, |A| = 1.
  c.models = {Model{{1.0f}, {{"weight", 1.0}}, 0}, Model{{-1.0f}, {{"weight", -2.0}}, 1}};
  EXPECT_EQ(run("ties", c).out[0], -3.0f);
  c.conventions = Conventions::Paper;
  EXPECT_EQ(run("ties", c).out[0], 1.0f);
}

TEST(Breadcrumbs, KeepsExactlyTheStatedCounts) {
  const size_t n = 1000;
  Case c;
  c.shape = {10, 100};
  c.base = Model{std::vector<float>(n, 0.0f), {}, 0};
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i)
    x[(i * 389) % n] = static_cast<float>(i + 1) * (i % 3 ? 1.0f : -1.0f);  // distinct |x|
  c.models = {Model{x, {{"weight", 1.0}, {"density", 0.9}, {"gamma", 0.01}}, 0}};
  const Result r = run("breadcrumbs", c);
  // kept = 900, top = 10, bot = 90: |x| ranks 91..990 (values with |x| in (90, 990]) survive.
  size_t kept = 0;
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    const bool want = a > 90.0f && a <= 990.0f;
    EXPECT_EQ(r.out[i] != 0.0f, want) << i;
    kept += r.out[i] != 0.0f;
  }
  EXPECT_EQ(kept, 900u);
}

TEST(Breadcrumbs, SmallTensorWithNoOutliersKeepsTheTopDensity) {
  // gamma 0.01 of 64 entries: int(0.64) = 0 outliers. mergekit 0.1.5 keeps the ascending ranks
  // [bot, bot + kept) = [7, 64) (kept = int(57.6) = 57); so does the paper convention.
  for (const Conventions conv : {Conventions::Mergekit, Conventions::Paper}) {
    Case c;
    c.shape = {64};
    c.base = Model{std::vector<float>(64, 0.5f), {}, 0};
    c.models = {Model{gaussian(64, 3), {{"weight", 1.0}, {"density", 0.9}}, 0}};
    c.conventions = conv;
    const Result r = run("breadcrumbs", c);
    EXPECT_TRUE(r.warnings.empty());
    std::vector<float> mag;
    for (float v : c.models[0].values) mag.push_back(std::fabs(v - 0.5f));  // |τ|
    std::vector<float> sorted = mag;
    std::sort(sorted.begin(), sorted.end());
    size_t changed = 0;
    for (size_t i = 0; i < 64; ++i) {
      const bool kept = r.out[i] != 0.5f;
      changed += kept;
      EXPECT_EQ(kept, mag[i] >= sorted[7]) << i;
    }
    EXPECT_EQ(changed, 57u);
  }
}

TEST(Dare, KeptFractionAndL1Rescale) {
  const size_t n = 200000;
  Case c;
  c.shape = {static_cast<int64_t>(n)};
  c.base = Model{std::vector<float>(n, 0.0f), {}, 0};
  std::vector<float> x = gaussian(n, 9);
  for (float& v : x) v = v == 0.0f ? 1.0f : v;
  c.models = {Model{x, {{"weight", 1.0}, {"density", 0.3}}, 0}};
  const Result r = run("dare_linear", c);
  size_t kept = 0;
  double l1_in = 0, l1_out = 0;
  for (size_t i = 0; i < n; ++i) {
    kept += r.out[i] != 0.0f;
    l1_in += std::fabs(x[i]);
    l1_out += std::fabs(r.out[i]);
  }
  // Bernoulli(0.3): σ of the fraction is sqrt(0.21/n) ≈ 0.001; 5σ bound.
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.3, 5 * std::sqrt(0.21 / n));
  // The L1 ratio restores the L1 norm (up to f32 rounding of each survivor).
  EXPECT_NEAR(l1_out / l1_in, 1.0, 1e-5);
}

TEST(Dare, PaperRescaleIsOneOverDensityAndStreamsInBlocks) {
  const size_t n = 10000;
  for (const char* name : {"dare_linear", "dare_ties"}) {
    Case c;
    c.shape = {100, 100};
    c.conventions = Conventions::Paper;
    c.base = Model{gaussian(n, 1), {}, 0};
    for (uint32_t m = 0; m < 2; ++m) {
      std::vector<float> x = gaussian(n, 40 + m, 0.1);
      for (size_t i = 0; i < n; ++i) x[i] += c.base->values[i];
      c.models.push_back(Model{x, {{"weight", 0.5 + m}, {"density", 0.25}}, m});
    }
    ASSERT_TRUE(method(name).pointwise(job_of(c))) << name;
    const Result whole = run(name, c);
    std::vector<float> pieces(n);
    std::vector<std::string> warnings;
    for (uint64_t first = 0; first < n; first += 777) {
      const uint64_t len = std::min<uint64_t>(777, n - first);
      method(name).merge(job_of(c, first, len), std::span<float>(pieces).subspan(first, len),
                         warnings);
    }
    EXPECT_TRUE(same_bytes(whole.out, pieces)) << name;
    // The mergekit L1 rescale needs the whole tensor.
    c.conventions = Conventions::Mergekit;
    EXPECT_FALSE(method(name).pointwise(job_of(c))) << name;
    c.global["rescale"] = 0;
    EXPECT_TRUE(method(name).pointwise(job_of(c))) << name;
  }
}

TEST(Dare, ModelsDrawIndependentMasks) {
  const size_t n = 4000;
  Case c;
  c.shape = {static_cast<int64_t>(n)};
  c.base = Model{std::vector<float>(n, 0.0f), {}, 0};
  c.models = {Model{std::vector<float>(n, 1.0f), {{"weight", 1.0}, {"density", 0.5}}, 0}};
  const Result a = run("dare_linear", c);
  c.models[0].index = 1;
  const Result b = run("dare_linear", c);
  size_t both = 0;
  for (size_t i = 0; i < n; ++i) both += a.out[i] != 0 && b.out[i] != 0;
  // Independent masks: both kept ≈ n/4 (σ ≈ 27); identical masks would give n/2.
  EXPECT_NEAR(static_cast<double>(both), n / 4.0, 5 * std::sqrt(n * 0.25 * 0.75));
  c.seed = 8;
  EXPECT_FALSE(same_bytes(run("dare_linear", c).out, b.out));
}

TEST(Della, PerRankKeepProbabilities) {
  const size_t rows = 20000, len = 5;
  Case c;
  c.shape = {static_cast<int64_t>(rows), static_cast<int64_t>(len)};
  c.base = Model{std::vector<float>(rows * len, 0.0f), {}, 0};
  std::vector<float> x(rows * len);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t j = 0; j < len; ++j)
      x[r * len + j] = static_cast<float>((j * 3 + r) % len + 1);  // ranks permuted
  }
  c.models = {Model{x, {{"weight", 1.0}, {"density", 0.5}, {"epsilon", 0.3}}, 0}};
  c.global["rescale"] = 0;
  const Result res = run("della_linear", c);
  // Rank r (1..5) of |τ| = r: q = 0.2 + 0.6·(r − 1)/4 = 0.2, 0.35, 0.5, 0.65, 0.8.
  for (size_t rank = 1; rank <= len; ++rank) {
    size_t kept = 0;
    for (size_t i = 0; i < x.size(); ++i)
      kept += x[i] == static_cast<float>(rank) && res.out[i] != 0;
    const double q = 0.2 + 0.6 * static_cast<double>(rank - 1) / 4.0;
    EXPECT_NEAR(static_cast<double>(kept) / rows, q, 5 * std::sqrt(q * (1 - q) / rows)) << rank;
  }
}

TEST(Della, EpsilonRangeIsAUsageErrorInMergekitAndAWarningInPaper) {
  Case c;
  c.shape = {4, 4};
  c.base = Model{std::vector<float>(16, 0.0f), {}, 0};
  c.models = {Model{gaussian(16, 2), {{"weight", 1.0}, {"density", 0.1}}, 0}};  // 0.1 − 0.15 < 0
  EXPECT_THROW(run("della", c), Error);
  c.conventions = Conventions::Paper;
  const Result r = run("della", c);
  EXPECT_EQ(r.warnings.size(), 1u);
}

TEST(Della, PaperRescalesSurvivorsByOneOverQ) {
  Case c;
  c.shape = {50, 4};
  c.conventions = Conventions::Paper;
  c.base = Model{std::vector<float>(200, 0.0f), {}, 0};
  std::vector<float> x(200);
  for (size_t i = 0; i < 200; ++i)
    x[i] = static_cast<float>(i % 4 + 1);  // rank = value in each row
  c.models = {Model{x, {{"weight", 1.0}, {"density", 0.5}, {"epsilon", 0.2}}, 0}};
  const Result r = run("della_linear", c);
  for (size_t i = 0; i < 200; ++i) {
    const double q = 0.3 + 0.4 * (x[i] - 1) / 3.0;
    if (r.out[i] != 0) {
      EXPECT_NEAR(r.out[i], x[i] / q, 1e-5 * x[i] / q) << i;
    }
  }
}

TEST(Della, Bf16RanksAreStableByMagnitudeInEveryKindOfRow) {
  // Rows of bf16 task vectors that the rank computation treats differently: Gaussian values
  // without zeros, with many zeros, all zeros, a few distinct values (long runs of equal
  // magnitudes), magnitudes over 2^-60..2^20 (too many distinct keys to count), one value.
  // Paper convention without rescale, base 0, one model of weight 1: the output is τ where
  // uniform(i) < q(rank) and +0 elsewhere, with the rank from a stable sort of |τ|.
  const size_t rows = 6, len = 600;
  Case c;
  c.shape = {static_cast<int64_t>(rows), static_cast<int64_t>(len)};
  c.work = WorkType::BF16;
  c.conventions = Conventions::Paper;
  c.base = Model{std::vector<float>(rows * len, 0.0f), {}, 0};
  const std::vector<float> g = gaussian(rows * len, 31, 0.01);
  const util::KeyedRng rng(77, "della rows", 0);
  std::vector<float> x(rows * len);
  for (size_t j = 0; j < len; ++j) {
    const size_t i = j;
    x[0 * len + j] = g[i] == 0.0f ? 1e-3f : g[i];
    x[1 * len + j] = rng.below(j, 3) == 0 ? g[len + i] : 0.0f;
    x[2 * len + j] = 0.0f;
    x[3 * len + j] = static_cast<float>(static_cast<int>(rng.below(len + j, 5)) - 2) * 0.5f;
    x[4 * len + j] = std::ldexp(1.0f + static_cast<float>(rng.below(2 * len + j, 128)) / 128.0f,
                                static_cast<int>(rng.below(3 * len + j, 81)) - 60);
    x[5 * len + j] = -0.25f;
  }
  x = to_bf16(x);
  const double d = 0.5, eps = 0.3;
  c.models = {Model{x, {{"weight", 1.0}, {"density", d}, {"epsilon", eps}}, 0}};
  c.global["rescale"] = 0;
  const Result res = run("della_linear", c);
  size_t kept = 0;
  for (size_t r = 0; r < rows; ++r) {
    const std::vector<double> row(x.begin() + r * len, x.begin() + (r + 1) * len);
    const std::vector<size_t> idx = ascending(row);
    for (size_t k = 0; k < len; ++k) {
      const size_t i = r * len + idx[k];
      const double q = (d - eps) + 2 * eps * static_cast<double>(k) / static_cast<double>(len - 1);
      const bool keep = drawn_keep(c.seed, c.name, 0, RandomPurpose::DellaKeep, i, q);
      kept += keep;
      ASSERT_EQ(res.out[i], keep ? x[i] : 0.0f) << "row " << r << ", rank " << k;
    }
  }
  EXPECT_GT(kept, rows * len / 4);
}

TEST(Della, RowsOfAThreeDimensionalTensorRunAlongItsSecondDimension) {
  // Shape [d0, d1, d2]: d0·d2 rows of length d1 with stride d2 (MERGE.md: ranks along dim 1).
  // Values k/16 with zeros and runs of equal magnitudes; paper convention without rescale, base
  // 0, one model of weight 1: the output is τ where uniform(i) < q(rank in its row), +0 elsewhere.
  const size_t d0 = 2, d1 = 40, d2 = 3, n = d0 * d1 * d2;
  Case c;
  c.shape = {static_cast<int64_t>(d0), static_cast<int64_t>(d1), static_cast<int64_t>(d2)};
  c.conventions = Conventions::Paper;
  c.base = Model{std::vector<float>(n, 0.0f), {}, 0};
  const util::KeyedRng rng(5, "della 3d", 0);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(int(rng.below(i, 17)) - 8) / 16.0f;
  const double d = 0.5, eps = 0.3;
  c.models = {Model{x, {{"weight", 1.0}, {"density", d}, {"epsilon", eps}}, 0}};
  c.global["rescale"] = 0;
  const Result res = run("della_linear", c);
  for (size_t o = 0; o < d0; ++o) {
    for (size_t s = 0; s < d2; ++s) {
      std::vector<double> row(d1);
      for (size_t j = 0; j < d1; ++j) row[j] = x[(o * d1 + j) * d2 + s];
      const std::vector<size_t> idx = ascending(row);
      for (size_t k = 0; k < d1; ++k) {
        const size_t i = (o * d1 + idx[k]) * d2 + s;
        const double q = (d - eps) + 2 * eps * static_cast<double>(k) / static_cast<double>(d1 - 1);
        const bool keep = drawn_keep(c.seed, c.name, 0, RandomPurpose::DellaKeep, i, q);
        ASSERT_EQ(res.out[i], keep ? x[i] : 0.0f) << "row " << o << "," << s << ", rank " << k;
      }
    }
  }
}

TEST(TaskArithmeticFamily, BlocksEqualWholeForTaskArithmetic) {
  Case c = quantized_case({7, 11}, 5);
  c.global["lambda"] = 0.7;
  const Result whole = run("task_arithmetic", c);
  std::vector<float> pieces(77);
  std::vector<std::string> w;
  for (uint64_t f = 0; f < 77; f += 10) {
    const uint64_t len = std::min<uint64_t>(10, 77 - f);
    method("task_arithmetic").merge(job_of(c, f, len), std::span<float>(pieces).subspan(f, len), w);
  }
  EXPECT_TRUE(same_bytes(whole.out, pieces));
  // A block of a non-pointwise job is refused.
  std::vector<float> out(10);
  EXPECT_THROW(method("ties").merge(job_of(c, 0, 10), out, w), Error);
}

TEST(TaskArithmeticFamily, MissingWeightIsAUsageError) {
  Case c = quantized_case({5}, 1);
  c.models[1].params.erase("weight");
  try {
    run("ties", c);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(std::string(e.what()).find("Missing required parameter weight for model #1"),
              std::string::npos);
  }
}

// bf16 work dtype: every ⟦·⟧ of MERGE.md §2.1 rounds (computed in f32, rounded to bf16).
std::vector<double> ref_ties_bf16(const Case& c, bool with_lambda) {
  const size_t n = count_of(c.shape);
  std::vector<double> out(n);
  std::vector<double> w;
  for (const Model& m : c.models) w.push_back(bf16(m.params.at("weight")));
  for (size_t i = 0; i < n; ++i) {
    const double b = c.base->values[i];
    std::vector<double> u;
    for (size_t k = 0; k < c.models.size(); ++k)
      u.push_back(bf16(w[k] * bf16(c.models[k].values[i] - b)));
    double vote = 0;
    for (double x : u) vote += x;
    const double g = bf16(vote) >= 0 ? 1 : -1;
    double mixed = 0, div = 0;
    for (size_t k = 0; k < u.size(); ++k) {
      if (u[k] * g > 0) {
        mixed += u[k];
        div += w[k];
      }
    }
    mixed = bf16(mixed);
    div = bf16(div);
    if (div == 0) div = 1;
    double m = bf16(mixed / div);
    if (with_lambda) m = bf16(static_cast<float>(0.9) * m);
    out[i] = bf16(b + m);
  }
  return out;
}

TEST(Bf16, TiesRoundsAtEveryStep) {
  Case c;
  c.shape = {2000};
  c.work = WorkType::BF16;
  c.base = Model{to_bf16(gaussian(2000, 1)), {}, 0};
  const double w[] = {0.3, 0.7, 0.45};
  for (uint32_t m = 0; m < 3; ++m) {
    std::vector<float> x = gaussian(2000, 60 + m, 0.05);
    for (size_t i = 0; i < x.size(); ++i) x[i] += c.base->values[i];
    c.models.push_back(Model{to_bf16(x), {{"weight", w[m]}, {"density", 1.0}}, m});
  }
  c.global["lambda"] = 0.9;
  const Result r = run("ties", c);
  const std::vector<double> want = ref_ties_bf16(c, true);
  size_t equal = 0, differs_from_f64 = 0;
  const std::vector<double> exact = ref_gta("ties", c);
  for (size_t i = 0; i < want.size(); ++i) {
    equal += static_cast<double>(r.out[i]) == want[i];
    differs_from_f64 += bf16(exact[i]) != want[i];
  }
  // Bit-identical to the rounding-point reference; the points matter: a once-rounded f64 result
  // differs on a visible share of elements.
  EXPECT_EQ(equal, want.size());
  EXPECT_GT(differs_from_f64, want.size() / 100);
}

TEST(Bf16, TaskVectorsAreRoundedBeforeWeighting) {
  // b = 1, x = 1 + 2^-7 + 2^-8 is not bf16 but x is given as bf16 values; take x = 1.0078125 (bf16)
  // and w = 0.5: τ = 2^-7 exact, u = 2^-8, b + u = 1.00390625 → rounds to 1 (ties to even).
  Case c;
  c.shape = {1};
  c.work = WorkType::BF16;
  c.base = Model{{1.0f}, {}, 0};
  c.models = {Model{{1.0078125f}, {{"weight", 0.5}}, 0}};
  EXPECT_EQ(run("task_arithmetic", c).out[0], 1.0f);
  c.work = WorkType::F32;
  EXPECT_EQ(run("task_arithmetic", c).out[0], 1.00390625f);
}

TEST(Bf16, DareL1RescaleRoundsTheRatioAndEachSurvivor) {
  const size_t n = 5000;
  Case c;
  c.shape = {static_cast<int64_t>(n)};
  c.work = WorkType::BF16;
  c.base = Model{std::vector<float>(n, 0.0f), {}, 0};
  c.models = {Model{to_bf16(gaussian(n, 12, 0.02)), {{"weight", 1.0}, {"density", 0.3}}, 0}};
  const Result r = run("dare_linear", c);
  // mergekit: keep ~ Bernoulli(⟦0.3⟧) drawn in bf16; B = ⟦Σ|τ|⟧, A = ⟦Σ|τ⊙mask|⟧; survivors
  // ⟦τ·⟦B/A⟧⟧; then u = ⟦1·τ̂⟧, M = ⟦u⟧, output ⟦0 + M⟧.
  const std::vector<float>& x = c.models[0].values;
  std::vector<int> keep(n);
  double sb = 0, sa = 0;
  for (size_t i = 0; i < n; ++i) {
    keep[i] = drawn_keep(c.seed, c.name, 0, RandomPurpose::DareKeep, i, bf16(0.3));
    sb += std::fabs(x[i]);
    sa += keep[i] ? std::fabs(x[i]) : 0.0;
  }
  const double ratio = bf16(bf16(sb) / bf16(sa));
  size_t differs_unrounded_ratio = 0;
  for (size_t i = 0; i < n; ++i) {
    const double want = keep[i] ? bf16(x[i] * ratio) : 0.0;
    ASSERT_EQ(static_cast<double>(r.out[i]), want) << i;
    differs_unrounded_ratio += keep[i] && bf16(x[i] * (sb / sa)) != want;
  }
  EXPECT_GT(differs_unrounded_ratio, 0u);
}

}  // namespace
}  // namespace deltaedit::merge::test
