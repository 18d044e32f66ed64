// lowrank: truncation error against an exact SVD, identity at full rank, randomized accuracy,
// factors that rebuild the written values bit for bit.
#include <algorithm>
#include <cmath>

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <cblas.h>
#include <gtest/gtest.h>

#include "edit_test_util.h"
#include "util/error.h"

namespace deltaedit::edit {
namespace {
using namespace edit_test;

Eigen::MatrixXd random_orthonormal(int64_t rows, int64_t cols, uint64_t seed) {
  const util::KeyedRng rng(seed, "orthonormal", 0);
  Eigen::MatrixXd g(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) g(i, j) = rng.normal(static_cast<uint64_t>(i * cols + j));
  }
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  return qr.householderQ() * Eigen::MatrixXd::Identity(rows, cols);
}

// A = Q1·diag(σ)·Q2ᵀ with random orthonormal Q1 (m×k), Q2 (n×k), stored row-major in f32.
std::vector<float> planted(int64_t m, int64_t n, const std::vector<double>& sigma, uint64_t seed) {
  const int64_t k = static_cast<int64_t>(sigma.size());
  const Eigen::MatrixXd q1 = random_orthonormal(m, k, seed), q2 = random_orthonormal(n, k, seed + 1);
  Eigen::VectorXd s(k);
  for (int64_t t = 0; t < k; ++t) s(t) = sigma[t];
  const Eigen::MatrixXd a = q1 * s.asDiagonal() * q2.transpose();
  std::vector<float> out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) out[i * n + j] = static_cast<float>(a(i, j));
  }
  return out;
}

Eigen::VectorXd exact_sigma(const std::vector<float>& d, int64_t m, int64_t n) {
  Eigen::MatrixXd a(m, n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) a(i, j) = d[i * n + j];
  }
  return Eigen::JacobiSVD<Eigen::MatrixXd>(a).singularValues();
}

double frob_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
  return std::sqrt(s);
}

std::vector<double> harmonic(int64_t k) {
  std::vector<double> s(k);
  for (int64_t t = 0; t < k; ++t) s[t] = 1.0 / (t + 1);
  return s;
}

TEST(LowRank, PlantedSpectrumIsRecovered) {
  const std::vector<float> d = planted(64, 48, harmonic(48), 1);
  const Eigen::VectorXd s = exact_sigma(d, 64, 48);
  for (int64_t t = 0; t < 48; ++t) EXPECT_NEAR(s(t), 1.0 / (t + 1), 1e-5);
}

TEST(LowRank, ErrorIsTailEnergy) {
  // Eckart–Young: ‖Δ − Δ_r‖_F = sqrt(Σ_{i>r} σ_i²). f32 factors and the f32 rebuild add errors of
  // order 1e-7·‖Δ‖_F (‖Δ‖_F ≈ 1.27 here), far below the 1e-5 relative tolerance on a tail ≥ 0.1.
  const int64_t m = 64, n = 48;
  const std::vector<float> d = planted(m, n, harmonic(48), 2);
  const Eigen::VectorXd s = exact_sigma(d, m, n);
  for (int64_t r : {1, 5, 10, 30}) {
    const EditRun res = run(*op("lowrank:rank=" + std::to_string(r)), d, {m, n});
    double tail = 0;
    for (int64_t t = r; t < s.size(); ++t) tail += s(t) * s(t);
    EXPECT_NEAR(frob_diff(res.out, d), std::sqrt(tail), 1e-5 * std::sqrt(tail)) << "r=" << r;
    ASSERT_TRUE(res.outcome.factors.has_value());
    EXPECT_EQ(res.outcome.factors->rank, r);
    for (int64_t t = 0; t < r; ++t) EXPECT_NEAR(res.outcome.factors->s[t], s(t), 1e-5);
  }
}

TEST(LowRank, FactorsRebuildBitForBit) {
  const int64_t m = 40, n = 70;
  const std::vector<float> d = gaussian(m * n, 3);
  for (const char* spec : {"lowrank:rank=7", "lowrank:ratio=0.5", "lowrank:rank=5,method=randomized"}) {
    const EditRun res = run(*op(spec), d, {m, n});
    ASSERT_TRUE(res.outcome.factors.has_value()) << spec;
    const LowRankFactors& f = *res.outcome.factors;
    EXPECT_EQ(f.rows, m);
    EXPECT_EQ(f.cols, n);
    std::vector<float> rebuilt(m * n, 123.0f);
    reconstruct_lowrank(f, rebuilt);
    EXPECT_TRUE(same_bytes(rebuilt, res.out)) << spec;
  }
  EXPECT_EQ(run(*op("lowrank:ratio=0.5"), d, {m, n}).outcome.factors->rank, 20);
  EXPECT_EQ(run(*op("lowrank"), d, {m, n}).outcome.factors->rank, 4);  // ⌊0.1·40⌋
}

TEST(LowRank, FullRankIsIdentity) {
  const int64_t m = 30, n = 20;
  const std::vector<float> d = gaussian(m * n, 4);
  for (const char* spec : {"lowrank:rank=20", "lowrank:rank=1000", "lowrank:ratio=1", "lowrank:energy=1",
                           "lowrank:rank=25,method=randomized"}) {
    const EditRun res = run(*op(spec), d, {m, n});
    EXPECT_TRUE(same_bytes(res.out, d)) << spec;
    EXPECT_FALSE(res.outcome.factors.has_value()) << spec;
    EXPECT_TRUE(res.outcome.touched);
  }
  // rank = min − 1 through the factors: close to, but not exactly, Δ.
  const EditRun res = run(*op("lowrank:rank=19"), d, {m, n});
  EXPECT_LT(frob_diff(res.out, d), 0.5 * frob_diff(std::vector<float>(d.size(), 0.0f), d));
}

TEST(LowRank, EnergyPicksSmallestSufficientRank) {
  const int64_t m = 50, n = 40;
  const std::vector<float> d = planted(m, n, harmonic(40), 5);
  const Eigen::VectorXd s = exact_sigma(d, m, n);
  double total = 0;
  for (int64_t t = 0; t < s.size(); ++t) total += s(t) * s(t);
  for (int64_t want : {1, 3, 12}) {
    double below = 0;
    for (int64_t t = 0; t < want - 1; ++t) below += s(t) * s(t);
    const double at = below + s(want - 1) * s(want - 1);
    const double e = 0.5 * (below + at) / total;  // strictly between the energies of want−1 and want
    const EditRun res = run(*op("lowrank:energy=" + std::to_string(e)), d, {m, n});
    ASSERT_TRUE(res.outcome.factors.has_value());
    EXPECT_EQ(res.outcome.factors->rank, want) << "e=" << e;
  }
}

TEST(LowRank, RandomizedWithinOnePercentOfExact) {
  const int64_t m = 512, n = 512, r = 32;
  std::vector<double> sigma(512);
  for (int64_t t = 0; t < 512; ++t) sigma[t] = std::exp(-double(t) / 20.0);
  const std::vector<float> d = planted(m, n, sigma, 6);
  const double exact = frob_diff(edited("lowrank:rank=32", d, {m, n}), d);
  const std::vector<float> rnd = edited("lowrank:rank=32,method=randomized", d, {m, n}, 7);
  const double randomized = frob_diff(rnd, d);
  EXPECT_GT(exact, 0);
  EXPECT_LE(randomized, 1.01 * exact) << "exact " << exact << " randomized " << randomized;
  // Seeded: same seed, same bytes.
  EXPECT_TRUE(same_bytes(rnd, edited("lowrank:rank=32,method=randomized", d, {m, n}, 7)));
  (void)r;
}

TEST(LowRank, OnlyTwoDimensional) {
  const auto o = op("lowrank:rank=1");
  const std::vector<int64_t> s1 = {12}, s3 = {2, 3, 2};
  EXPECT_FALSE(o->applies_to(s1));
  EXPECT_FALSE(o->applies_to(s3));
  EXPECT_TRUE(o->applies_to(std::vector<int64_t>{3, 4}));
  const std::vector<float> d = gaussian(12, 8);
  for (const auto& shape : {std::vector<int64_t>{12}, std::vector<int64_t>{2, 3, 2}}) {
    const EditRun res = run(*o, d, shape);
    EXPECT_FALSE(res.outcome.touched);
    EXPECT_TRUE(same_bytes(res.out, d));
  }
  EXPECT_GT(o->workspace_bytes(std::vector<int64_t>{100, 200}), 0u);
}

TEST(LowRank, RankZeroAndZeroDelta) {
  for (const char* spec : {"lowrank:rank=0", "lowrank:rank=0,method=randomized,oversample=0"}) {
    const EditRun z = run(*op(spec), gaussian(20, 9), {4, 5});
    for (float v : z.out) EXPECT_EQ(v, 0.0f) << spec;
    ASSERT_TRUE(z.outcome.factors.has_value()) << spec;
    EXPECT_EQ(z.outcome.factors->rank, 0) << spec;
  }
  for (const char* spec : {"lowrank:rank=2", "lowrank:rank=2,method=randomized", "lowrank:energy=0.5"}) {
    for (float v : edited(spec, std::vector<float>(30, 0.0f), {5, 6})) EXPECT_EQ(v, 0.0f) << spec;
  }
}

TEST(LowRank, NonFiniteIsNumericError) {
  std::vector<float> d = gaussian(20, 10);
  d[7] = NAN;
  try {
    run(*op("lowrank:rank=1"), d, {4, 5}, 1, "w");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Numeric);
    EXPECT_EQ(e.tensor(), "w");
  }
}

TEST(LowRank, ReconstructChecksSizes) {
  LowRankFactors f;
  f.rows = 2;
  f.cols = 3;
  f.rank = 1;
  f.u = {1, 2};
  f.s = {2};
  f.v = {1, 0, -1};
  std::vector<float> out(6);
  reconstruct_lowrank(f, out);
  EXPECT_EQ(out, (std::vector<float>{2, 0, -2, 4, 0, -4}));
  std::vector<float> wrong(5);
  EXPECT_THROW(reconstruct_lowrank(f, wrong), Error);
  f.v.pop_back();
  EXPECT_THROW(reconstruct_lowrank(f, out), Error);
}

}  // namespace
}  // namespace deltaedit::edit

namespace deltaedit::edit {
namespace {
using namespace edit_test;

// The randomized SVD runs its BLAS calls single-threaded (SerialBlas): the bytes do not depend on
// the BLAS library's thread setting, and that setting is restored afterwards.
TEST(LowRank, RandomizedDoesNotDependOnBlasThreads) {
  const int64_t rows = 600, cols = 500;
  const std::vector<float> d = gaussian(size_t(rows * cols), 21);
  const int before = openblas_get_num_threads();
  std::vector<float> first;
  for (int threads : {1, 2, 4}) {
    openblas_set_num_threads(threads);
    const auto out = edited("lowrank:rank=50,method=randomized", d, {rows, cols});
    EXPECT_EQ(openblas_get_num_threads(), threads);
    if (first.empty())
      first = out;
    else
      EXPECT_TRUE(same_bytes(out, first)) << threads << " BLAS threads";
  }
  openblas_set_num_threads(before);
}

}  // namespace
}  // namespace deltaedit::edit
