// sce, karcher, multislerp, nearswap, ram and ramplus_tl against f64 references written from
// MERGE.md §2.8, closed forms and properties.
#include <cmath>
#include <numeric>

#include "merge_test_util.h"
#include "util/error.h"

namespace deltaedit::merge::test {
namespace {

Case with_base(std::vector<int64_t> shape, int models, double spread, uint64_t seed = 1) {
  Case c;
  c.shape = shape;
  const size_t n = count_of(shape);
  c.base = Model{gaussian(n, seed), {}, 0};
  for (int m = 0; m < models; ++m) {
    std::vector<float> x = gaussian(n, seed + 10 + m, spread);
    for (size_t i = 0; i < n; ++i) x[i] += c.base->values[i];
    c.models.push_back(Model{x, {{"weight", 1.0}}, static_cast<uint32_t>(m + 1)});
  }
  return c;
}

double tau(const Case& c, size_t m, size_t i) {
  return static_cast<double>(c.models[m].values[i]) - c.base->values[i];
}

TEST(Nearswap, MatchesReferenceAndLimits) {
  Case c = with_base({40}, 1, 0.5);
  c.global["t"] = 0.3;
  std::vector<double> want(40);
  for (size_t i = 0; i < 40; ++i) {
    const double a = c.base->values[i], b = c.models[0].values[i];
    const double w = std::clamp(0.3 / std::max(std::fabs(a - b), 1e-6), 0.0, 1.0);
    want[i] = w * b + (1 - w) * a;
  }
  expect_near_rel(run("nearswap", c).out, want, 1e-6, "nearswap");
  c.global["t"] = 1e9;  // every entry is near: the other model
  EXPECT_TRUE(same_bytes(run("nearswap", c).out, c.models[0].values));
  c.global["t"] = 0.0;  // none is: the base
  EXPECT_TRUE(same_bytes(run("nearswap", c).out, c.base->values));
  c.models.push_back(c.models[0]);
  EXPECT_THROW(run("nearswap", c), Error);
}

std::vector<double> ref_ram(const Case& c, bool plus, double eps, double r = 0.1,
                            double alpha = 0.2) {
  const size_t n = count_of(c.shape), N = c.models.size();
  std::vector<double> lam(N, 1.0);
  if (plus) {
    for (size_t m = 0; m < N; ++m) {
      double shared = 0, unique = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!(std::fabs(tau(c, m, i)) > eps)) continue;
        int cnt = 0;
        for (size_t k = 0; k < N; ++k) cnt += std::fabs(tau(c, k, i)) > eps;
        (cnt == 1 ? unique : shared) += 1;
      }
      lam[m] = 1 + r * std::clamp(shared / std::max(unique, eps), 0.0, alpha);
    }
  }
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    int cnt = 0;
    double s = 0;
    for (size_t m = 0; m < N; ++m) {
      if (std::fabs(tau(c, m, i)) > eps) {
        ++cnt;
        s += tau(c, m, i);
      }
    }
    double add = 0;
    if (cnt == 1) {
      for (size_t m = 0; m < N; ++m) {
        if (std::fabs(tau(c, m, i)) > eps) add = tau(c, m, i) * lam[m];
      }
    } else if (cnt > 1) {
      add = s / cnt;
    }
    out[i] = c.base->values[i] + add;
  }
  return out;
}

// Task vectors with many inactive entries (exactly zero) and some below epsilon.
Case sparse_case() {
  Case c = with_base({10, 30}, 3, 0.1);
  for (size_t m = 0; m < 3; ++m) {
    for (size_t i = 0; i < 300; ++i) {
      if ((i * (m + 3)) % 5 < 2) c.models[m].values[i] = c.base->values[i];
      if ((i * (m + 7)) % 11 == 0)
        c.models[m].values[i] = c.base->values[i] + 1e-6f;  // below epsilon
    }
  }
  return c;
}

TEST(Ram, MatchesReference) {
  Case c = sparse_case();
  expect_near_rel(run("ram", c).out, ref_ram(c, false, 1e-5), 1e-6, "ram");
  c.global["epsilon"] = 0.05;
  expect_near_rel(run("ram", c).out, ref_ram(c, false, 0.05), 1e-6, "ram eps");
  c.global = {{"r", 0.5}, {"alpha", 1.5}};
  expect_near_rel(run("ramplus_tl", c).out, ref_ram(c, true, 1e-5, 0.5, 1.5), 1e-6, "ramplus_tl");
  EXPECT_FALSE(same_bytes(run("ramplus_tl", c).out, run("ram", c).out));
}

TEST(Ram, UniqueEntriesKeptWholeAndBlocksEqualWhole) {
  Case c;
  c.shape = {3};
  c.base = Model{{0, 0, 0}, {}, 0};
  c.models = {Model{{2, 4, 0}, {}, 1}, Model{{0, 2, 0}, {}, 2}};
  EXPECT_EQ(run("ram", c).out, (std::vector<float>{2, 3, 0}));
  Case s = sparse_case();
  const Result whole = run("ram", s);
  std::vector<float> pieces(300);
  std::vector<std::string> w;
  for (uint64_t f = 0; f < 300; f += 70) {
    const uint64_t len = std::min<uint64_t>(70, 300 - f);
    method("ram").merge(job_of(s, f, len), std::span<float>(pieces).subspan(f, len), w);
  }
  EXPECT_TRUE(same_bytes(whole.out, pieces));
}

std::vector<double> ref_sce(const Case& c, double topk) {
  const size_t n = count_of(c.shape), N = c.models.size();
  std::vector<std::vector<double>> t(N, std::vector<double>(n));
  for (size_t m = 0; m < N; ++m) {
    for (size_t i = 0; i < n; ++i) t[m][i] = tau(c, m, i);
  }
  if (topk < 1) {
    std::vector<double> var(n);
    size_t nnz = 0;
    for (size_t i = 0; i < n; ++i) {
      double mean = 0;
      for (size_t m = 0; m < N; ++m) mean += t[m][i] / N;
      for (size_t m = 0; m < N; ++m) var[i] += (t[m][i] - mean) * (t[m][i] - mean) / N;
      nnz += var[i] != 0;
    }
    const size_t k = static_cast<size_t>(nnz * topk);
    std::vector<size_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return var[a] > var[b]; });
    std::vector<int> keep(n, 0);
    for (size_t j = 0; j < k; ++j) keep[idx[j]] = 1;
    for (auto& v : t) {
      for (size_t i = 0; i < n; ++i) v[i] *= keep[i];
    }
  }
  std::vector<double> w(N);
  double total = 0;
  for (size_t m = 0; m < N; ++m) {
    for (double x : t[m]) w[m] += x * x / n;
    total += w[m];
  }
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    double vote = 0, num = 0, den = 0;
    for (size_t m = 0; m < N; ++m) vote += t[m][i];
    for (size_t m = 0; m < N; ++m) {
      if ((vote >= 0 && t[m][i] > 0) || (vote < 0 && t[m][i] < 0)) {
        num += w[m] / total * t[m][i];
        den += w[m] / total;
      }
    }
    out[i] = c.base->values[i] + num / std::max(den, 1e-6);
  }
  return out;
}

TEST(Sce, MatchesReference) {
  for (double topk : {1.0, 0.3}) {
    Case c = with_base({7, 9}, 3, 0.2);
    c.models[1].values[5] = c.models[0].values[5] = c.models[2].values[5];  // zero variance entry
    c.global["select_topk"] = topk;
    expect_near_rel(run("sce", c).out, ref_sce(c, topk), 1e-6, "sce");
  }
  Case c = with_base({20}, 2, 0.2);
  c.global["select_topk"] = 0.0;  // k = 0: nothing selected, the base
  EXPECT_TRUE(same_bytes(run("sce", c).out, c.base->values));
}

TEST(Karcher, ClosedForms) {
  Case c;
  c.shape = {4};
  c.models = {Model{{2, 0, 0, 0}, {}, 0}, Model{{0, 2, 0, 0}, {}, 1}};
  // Two orthogonal vectors of norm 2: the bisector, norm 2.
  const double h = 2 / std::sqrt(2.0);
  expect_near_rel(run("karcher", c).out, {h, h, 0, 0}, 1e-6, "orthogonal");
  // Same direction, norms 1 and 3: that direction with the mean norm 2.
  c.models = {Model{{0.6f, 0.8f, 0, 0}, {}, 0}, Model{{1.8f, 2.4f, 0, 0}, {}, 1}};
  expect_near_rel(run("karcher", c).out, {1.2, 1.6, 0, 0}, 1e-6, "colinear");
  // The base counts as an input with equal weight; weights are ignored.
  c.base = Model{{0, 0, 5, 0}, {}, 0};
  c.models[0].params["weight"] = 100;
  const Result r = run("karcher", c);
  EXPECT_GT(r.out[2], 1.0f);
}

TEST(Karcher, TangentSumVanishesAtTheMean) {
  Case c;
  c.shape = {30};
  for (uint32_t m = 0; m < 4; ++m) {
    std::vector<float> x = gaussian(30, 90 + m, 0.3, 1.0);
    c.models.push_back(Model{x, {}, m});
  }
  c.global["max_iter"] = 100;
  c.global["tol"] = 1e-12;
  const Result r = run("karcher", c);
  double nu = 0;
  for (float v : r.out) nu += static_cast<double>(v) * v;
  nu = std::sqrt(nu);
  std::vector<double> t(30, 0.0);
  for (const Model& m : c.models) {
    double nx = 0, cth = 0;
    for (float v : m.values) nx += static_cast<double>(v) * v;
    nx = std::sqrt(nx);
    for (size_t i = 0; i < 30; ++i) cth += r.out[i] / nu * m.values[i] / nx;
    const double th = std::acos(std::clamp(cth, -1.0, 1.0));
    for (size_t i = 0; i < 30; ++i)
      t[i] += (m.values[i] / nx - cth * r.out[i] / nu) * th / std::sin(th);
  }
  for (double v : t) EXPECT_NEAR(v, 0.0, 1e-5);
}

std::vector<double> ref_multislerp(const Case& c, std::vector<double> w, double eps) {
  const size_t n = count_of(c.shape), N = c.models.size();
  double ws = 0;
  for (double x : w) ws += x;
  for (double& x : w) x /= ws;
  std::vector<std::vector<double>> u(N, std::vector<double>(n));
  std::vector<double> mu(n), T(n);
  double scale = 0;
  for (size_t m = 0; m < N; ++m) {
    double nv = 0;
    for (size_t i = 0; i < n; ++i) {
      u[m][i] = c.models[m].values[i] - (c.base ? c.base->values[i] : 0.0);
      nv += u[m][i] * u[m][i];
    }
    nv = std::sqrt(nv);
    scale += w[m] * nv;
    for (size_t i = 0; i < n; ++i) {
      u[m][i] /= nv + eps;
      mu[i] += w[m] * u[m][i];
    }
  }
  double nm = 0;
  for (double x : mu) nm += x * x;
  for (double& x : mu) x /= std::sqrt(nm);
  for (size_t m = 0; m < N; ++m) {
    double d = 0;
    for (size_t i = 0; i < n; ++i) d += u[m][i] * mu[i];
    for (size_t i = 0; i < n; ++i) T[i] += w[m] * (u[m][i] - d * mu[i]);
  }
  double lam = 0;
  for (double x : T) lam += x * x;
  lam = std::sqrt(lam) + eps;
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = (mu[i] * std::cos(lam) + T[i] * std::sin(lam) / lam) * scale +
             (c.base ? c.base->values[i] : 0.0);
  }
  return out;
}

TEST(Multislerp, MatchesReferenceWithAndWithoutBase) {
  for (bool base : {false, true}) {
    Case c = with_base({5, 8}, 3, 0.5);
    if (!base) c.base.reset();
    const double w[] = {0.2, 0.5, 0.9};
    for (size_t m = 0; m < 3; ++m) c.models[m].params["weight"] = w[m];
    expect_near_rel(run("multislerp", c).out, ref_multislerp(c, {0.2, 0.5, 0.9}, 1e-8), 1e-5,
                    "multislerp");
  }
}

TEST(Multislerp, TwoSymmetricModelsGiveTheBisectorWithTheMeanNorm) {
  Case c;
  c.shape = {3};
  c.models = {Model{{1, 0, 0}, {{"weight", 1.0}}, 0}, Model{{0, 3, 0}, {{"weight", 1.0}}, 1}};
  // û = e1, e2; μ = (e1 + e2)/√2, T = 0: μ·(1 + 3)/2.
  const double h = 2 / std::sqrt(2.0);
  expect_near_rel(run("multislerp", c).out, {h, h, 0}, 1e-6, "bisector");
}

}  // namespace
}  // namespace deltaedit::merge::test
