// linear, slerp, nuslerp, model_stock, passthrough and the registry, against f64 references written
// from MERGE.md §2.3–2.7 and §3, closed forms and errors.
#include <cmath>

#include "merge_test_util.h"
#include "util/error.h"

namespace deltaedit::merge::test {
namespace {

TEST(Registry, ListsTheRequiredMethods) {
  for (const char* name : {"linear", "task_arithmetic", "ties", "dare_ties", "dare_linear",
                           "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
                           "model_stock", "slerp", "nuslerp", "passthrough"}) {
    const Method* m = find_method(name);
    ASSERT_NE(m, nullptr) << name;
    EXPECT_EQ(m->info().name, name);
    EXPECT_FALSE(m->info().summary.empty()) << name;
    for (const ParamSpec& p : m->info().params) {
      EXPECT_FALSE(p.doc.empty()) << name << "." << p.name;
      EXPECT_TRUE(p.required || p.default_value || p.name == "scale") << name << "." << p.name;
      if (p.default_value) {
        EXPECT_GE(*p.default_value, p.min) << name << "." << p.name;
        EXPECT_LE(*p.default_value, p.max) << name << "." << p.name;
      }
    }
  }
  EXPECT_EQ(find_method("dare-ties"), nullptr);
  EXPECT_GE(all_methods().size(), 13u);
}

TEST(Registry, DeclaredDefaultsFollowMergeMd) {
  const auto def = [](const char* m, const char* p) {
    for (const ParamSpec& s : method(m).info().params) {
      if (s.name == p) return s.default_value.value_or(-99);
    }
    return -100.0;
  };
  EXPECT_EQ(def("ties", "normalize"), 1.0);
  EXPECT_EQ(def("dare_ties", "normalize"), 0.0);
  EXPECT_EQ(def("breadcrumbs_ties", "normalize"), 0.0);
  EXPECT_EQ(def("della", "normalize"), 1.0);
  EXPECT_EQ(def("dare_ties", "rescale"), 1.0);
  EXPECT_EQ(def("ties", "rescale"), 0.0);
  EXPECT_EQ(def("della_linear", "rescale"), 1.0);
  EXPECT_EQ(def("breadcrumbs", "gamma"), 0.01);
  EXPECT_EQ(def("della", "epsilon"), 0.15);
  EXPECT_EQ(def("ties", "density"), 1.0);
  EXPECT_EQ(def("ties", "lambda"), 1.0);
  EXPECT_EQ(def("linear", "normalize"), 1.0);
  EXPECT_EQ(def("nuslerp", "nuslerp_flatten"), 1.0);
  EXPECT_EQ(def("nuslerp", "nuslerp_row_wise"), 0.0);
  EXPECT_EQ(def("model_stock", "filter_wise"), 0.0);
  EXPECT_EQ(def("slerp", "t"), -99);      // required, no default
  EXPECT_EQ(def("ties", "gamma"), -100);  // not declared
  EXPECT_EQ(def("linear", "density"), -100);
  EXPECT_TRUE(method("ties").info().needs_base);
  EXPECT_TRUE(method("slerp").info().needs_base);
  EXPECT_TRUE(method("model_stock").info().needs_base);
  EXPECT_FALSE(method("linear").info().needs_base);
  EXPECT_TRUE(method("dare_ties").info().random);
  EXPECT_TRUE(method("della").info().random);
  EXPECT_FALSE(method("ties").info().random);
}

Case linear_case(std::vector<int64_t> shape, std::vector<double> w) {
  Case c;
  c.shape = shape;
  const size_t n = count_of(shape);
  for (uint32_t m = 0; m < w.size(); ++m)
    c.models.push_back(Model{gaussian(n, 70 + m), {{"weight", w[m]}}, m});
  return c;
}

std::vector<double> ref_linear(const Case& c, bool normalize) {
  const size_t n = count_of(c.shape);
  std::vector<double> out(n);
  double ws = 0;
  for (const Model& m : c.models) ws += static_cast<float>(m.params.at("weight"));
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (const Model& m : c.models)
      s += static_cast<float>(m.params.at("weight")) * static_cast<double>(m.values[i]);
    out[i] = normalize ? s / ws : s;
  }
  return out;
}

TEST(Linear, MatchesReference) {
  for (auto shape : {std::vector<int64_t>{9, 7}, std::vector<int64_t>{13}}) {
    Case c = linear_case(shape, {0.6, -0.25, 1.1});
    expect_near_rel(run("linear", c).out, ref_linear(c, true), 1e-6, "normalize");
    c.global["normalize"] = 0;
    expect_near_rel(run("linear", c).out, ref_linear(c, false), 1e-6, "plain");
  }
}

TEST(Linear, BlocksEqualWhole) {
  Case c = linear_case({1000}, {1, 2, 3});
  const Result whole = run("linear", c);
  std::vector<float> pieces(1000);
  std::vector<std::string> w;
  for (uint64_t f = 0; f < 1000; f += 300) {
    const uint64_t len = std::min<uint64_t>(300, 1000 - f);
    method("linear").merge(job_of(c, f, len), std::span<float>(pieces).subspan(f, len), w);
  }
  EXPECT_TRUE(same_bytes(whole.out, pieces));
}

TEST(Linear, ZeroWeightSum) {
  Case c = linear_case({4}, {1, -1});
  const Result r = run("linear", c);
  EXPECT_EQ(r.warnings.size(), 1u);
  for (float v : r.out) EXPECT_FALSE(std::isfinite(v));
  c.conventions = Conventions::Paper;
  EXPECT_THROW(run("linear", c), Error);
}

TEST(Linear, Bf16InputsAccumulateInF32WithFmaAndRoundOnce) {
  // mergekit 0.1.5: f32 weights, R = addcmul(R, x_i, w_i) in f32 (fused on an FMA machine), R / Σw
  // in f32, one rounding to bf16 at the end.
  Case c = linear_case({3000}, {0.3, 0.3, 0.4});
  c.work = WorkType::BF16;
  for (Model& m : c.models) m.values = to_bf16(m.values);
  const Result r = run("linear", c);
  const float w[] = {0.3f, 0.3f, 0.4f};
  const float total = (w[0] + w[1]) + w[2];
  const double wb[] = {bf16(0.3), bf16(0.3), bf16(0.4)};
  const double total_b = bf16(wb[0] + wb[1] + wb[2]);
  size_t differs_from_per_step_rounding = 0;
  for (size_t i = 0; i < 3000; ++i) {
    float s = 0.0f;
    double stepwise = 0;  // 0.1.4: ⟦Σ⟦w̃_i·x_i⟧⟧ / ⟦Σw̃_i⟧ with bf16 weights and each step rounded
    for (int m = 0; m < 3; ++m) {
      s = std::fma(w[m], c.models[m].values[i], s);
      stepwise += bf16(wb[m] * c.models[m].values[i]);
    }
    const double want = bf16(s / total);
    ASSERT_EQ(static_cast<double>(r.out[i]), want) << i;
    differs_from_per_step_rounding += bf16(bf16(stepwise) / total_b) != want;
  }
  EXPECT_GT(differs_from_per_step_rounding, 10u);  // the 0.1.4 rule (rounding each step) differs
}

std::vector<double> ref_slerp(double t, const std::vector<float>& a, const std::vector<float>& b) {
  const size_t n = a.size();
  double na = 0, nb = 0;
  for (size_t i = 0; i < n; ++i) {
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  na = std::sqrt(na);
  nb = std::sqrt(nb);
  const double da = na > 1e-8 ? na : 1, db = nb > 1e-8 ? nb : 1;
  double c = 0;
  for (size_t i = 0; i < n; ++i) c += a[i] / da * b[i] / db;
  std::vector<double> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (std::fabs(c) > 0.9995) {
      out[i] = (1 - t) * a[i] + t * b[i];
    } else {
      const double th = std::acos(c);
      out[i] = (std::sin((1 - t) * th) * a[i] + std::sin(t * th) * b[i]) / std::sin(th);
    }
  }
  return out;
}

Case slerp_case(size_t n, double t, double spread) {
  Case c;
  c.shape = {static_cast<int64_t>(n)};
  c.base = Model{gaussian(n, 1), {}, 0};
  std::vector<float> x = gaussian(n, 2, spread);
  for (size_t i = 0; i < n; ++i) x[i] += c.base->values[i];
  c.models = {Model{x, {}, 1}};
  c.global["t"] = t;
  return c;
}

TEST(Slerp, MatchesReference) {
  for (double spread : {2.0, 0.01}) {  // slerp branch and lerp branch (|c| > 0.9995)
    for (double t : {0.25, 0.6}) {
      Case c = slerp_case(500, t, spread);
      expect_near_rel(run("slerp", c).out, ref_slerp(t, c.base->values, c.models[0].values), 1e-5,
                      "slerp");
    }
  }
}

TEST(Slerp, EndpointsAreExact) {
  for (double spread : {2.0, 0.01}) {
    Case c = slerp_case(300, 0.0, spread);
    EXPECT_TRUE(same_bytes(run("slerp", c).out, c.base->values)) << spread;
    c.global["t"] = 1.0;
    EXPECT_TRUE(same_bytes(run("slerp", c).out, c.models[0].values)) << spread;
  }
}

TEST(Slerp, ModelCounts) {
  Case c = slerp_case(10, 0.5, 1.0);
  c.models.push_back(c.models[0]);
  EXPECT_THROW(run("slerp", c), Error);
  c.models.clear();
  EXPECT_TRUE(same_bytes(run("slerp", c).out, c.base->values));  // one tensor passes through
  c.global.clear();
  c.models = slerp_case(10, 0.5, 1.0).models;
  try {
    run("slerp", c);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(std::string(e.what()).find("Missing required parameter t"), std::string::npos);
  }
}

TEST(Slerp, ZeroNormInputIsACosSinBlendWithAWarning) {
  Case c = slerp_case(20, 1.0 / 3.0, 1.0);
  std::fill(c.base->values.begin(), c.base->values.end(), 0.0f);
  const Result r = run("slerp", c);
  EXPECT_EQ(r.warnings.size(), 1u);
  // c = 0 → θ = π/2: r = cos(πt/2)·v0 + sin(πt/2)·v1 = sin(π/6)·v1 (not the lerp value v1/3).
  for (size_t i = 0; i < 20; ++i) EXPECT_NEAR(r.out[i], 0.5 * c.models[0].values[i], 1e-6);
}

// S(t, v0, v1) of MERGE.md §2.5 on one vector, f64.
std::vector<double> ref_s(double t, const std::vector<double>& v0, const std::vector<double>& v1) {
  double n0 = 0, n1 = 0, c = 0;
  for (size_t i = 0; i < v0.size(); ++i) {
    n0 += v0[i] * v0[i];
    n1 += v1[i] * v1[i];
  }
  n0 = std::max(std::sqrt(n0), 1e-7);
  n1 = std::max(std::sqrt(n1), 1e-7);
  for (size_t i = 0; i < v0.size(); ++i) c += v0[i] / n0 * v1[i] / n1;
  const double th = std::acos(std::clamp(c, -1.0, 1.0));
  std::vector<double> r(v0.size());
  for (size_t i = 0; i < v0.size(); ++i) {
    r[i] = std::fabs(std::sin(th)) < 1e-8
               ? (1 - t) * v0[i] + t * v1[i]
               : (std::sin((1 - t) * th) * v0[i] + std::sin(t * th) * v1[i]) / std::sin(th);
  }
  return r;
}

TEST(Nuslerp, MatchesReferenceFlattenRowsAndColumns) {
  const int64_t rows = 6, cols = 9;
  const size_t n = rows * cols;
  for (bool with_base : {false, true}) {
    for (int mode = 0; mode < 3; ++mode) {  // flatten, last axis, axis 0
      Case c;
      c.shape = {rows, cols};
      if (with_base) c.base = Model{gaussian(n, 3), {}, 0};
      c.models = {Model{gaussian(n, 4), {{"weight", 0.3}}, 1},
                  Model{gaussian(n, 5), {{"weight", 0.9}}, 2}};
      c.global = {{"nuslerp_flatten", mode == 0 ? 1.0 : 0.0},
                  {"nuslerp_row_wise", mode == 2 ? 1.0 : 0.0}};
      const double t = 0.9 / 1.2;
      std::vector<double> want(n);
      const auto delta = [&](const Model& m, size_t i) {
        return static_cast<double>(m.values[i]) - (with_base ? c.base->values[i] : 0.0);
      };
      const auto fibre = [&](std::vector<size_t> idx) {
        std::vector<double> a, b;
        for (size_t i : idx) {
          a.push_back(delta(c.models[0], i));
          b.push_back(delta(c.models[1], i));
        }
        const std::vector<double> s = ref_s(t, a, b);
        for (size_t k = 0; k < idx.size(); ++k)
          want[idx[k]] = s[k] + (with_base ? c.base->values[idx[k]] : 0.0);
      };
      if (mode == 0) {
        std::vector<size_t> all(n);
        std::iota(all.begin(), all.end(), 0);
        fibre(all);
      } else if (mode == 1) {
        for (int64_t r = 0; r < rows; ++r) {
          std::vector<size_t> idx;
          for (int64_t j = 0; j < cols; ++j) idx.push_back(r * cols + j);
          fibre(idx);
        }
      } else {
        for (int64_t j = 0; j < cols; ++j) {
          std::vector<size_t> idx;
          for (int64_t r = 0; r < rows; ++r) idx.push_back(r * cols + j);
          fibre(idx);
        }
      }
      expect_near_rel(run("nuslerp", c).out, want, 1e-5, "mode " + std::to_string(mode));
    }
  }
}

TEST(Nuslerp, ZeroWeightSumIsHalfAndCountsAreChecked) {
  Case c;
  c.shape = {40};
  c.models = {Model{gaussian(40, 4), {{"weight", 1.0}}, 1},
              Model{gaussian(40, 5), {{"weight", -1.0}}, 2}};
  Case half = c;
  half.models[0].params["weight"] = 0.5;
  half.models[1].params["weight"] = 0.5;
  EXPECT_TRUE(same_bytes(run("nuslerp", c).out, run("nuslerp", half).out));
  c.models.push_back(c.models[0]);
  EXPECT_THROW(run("nuslerp", c), Error);
}

std::vector<double> ref_model_stock(const Case& c, bool angles, size_t len) {
  const size_t n = count_of(c.shape), rows = n / len, N = c.models.size();
  std::vector<double> out(n);
  for (size_t r = 0; r < rows; ++r) {
    std::vector<std::vector<double>> d(N, std::vector<double>(len));
    for (size_t m = 0; m < N; ++m) {
      for (size_t j = 0; j < len; ++j)
        d[m][j] =
            static_cast<double>(c.models[m].values[r * len + j]) - c.base->values[r * len + j];
    }
    double sum = 0;
    int pairs = 0;
    for (size_t a = 0; a < N; ++a) {
      for (size_t b = a + 1; b < N; ++b) {
        double dot = 0, na = 0, nb = 0;
        for (size_t j = 0; j < len; ++j) {
          dot += d[a][j] * d[b][j];
          na += d[a][j] * d[a][j];
          nb += d[b][j] * d[b][j];
        }
        const double cij =
            std::clamp(dot / std::max(std::sqrt(na) * std::sqrt(nb), 1e-6), -1.0, 1.0);
        sum += angles ? std::acos(cij) : cij;
        ++pairs;
      }
    }
    const double cm = angles ? std::cos(sum / pairs) : sum / pairs;
    const double t = N * cm / (1 + (N - 1.0) * cm);
    for (size_t j = 0; j < len; ++j) {
      const size_t i = r * len + j;
      double mean = 0;
      for (const Model& m : c.models) mean += m.values[i];
      mean /= static_cast<double>(N);
      out[i] = t * mean + (1 - t) * c.base->values[i];
    }
  }
  return out;
}

Case stock_case(std::vector<int64_t> shape, int models) {
  Case c;
  c.shape = shape;
  const size_t n = count_of(shape);
  c.base = Model{gaussian(n, 1), {}, 0};
  const std::vector<float> common = gaussian(n, 2, 0.1);
  for (int m = 0; m < models; ++m) {
    std::vector<float> x = gaussian(n, 10 + m, 0.1);
    for (size_t i = 0; i < n; ++i) x[i] += c.base->values[i] + common[i];
    c.models.push_back(Model{x, {}, static_cast<uint32_t>(m + 1)});
  }
  return c;
}

TEST(ModelStock, MatchesReference) {
  for (Conventions conv : {Conventions::Mergekit, Conventions::Paper}) {
    for (bool filter_wise : {false, true}) {
      Case c = stock_case({12, 30}, 3);
      c.conventions = conv;
      c.global["filter_wise"] = filter_wise;
      expect_near_rel(run("model_stock", c).out,
                      ref_model_stock(c, conv == Conventions::Paper, filter_wise ? 30 : 360), 1e-5,
                      "model_stock");
    }
  }
  Case one_d = stock_case({25}, 4);
  expect_near_rel(run("model_stock", one_d).out, ref_model_stock(one_d, false, 25), 1e-5, "1-D");
}

TEST(ModelStock, AnglesAndCosinesDifferForThreeModels) {
  Case c = stock_case({200}, 3);
  const Result a = run("model_stock", c);
  c.conventions = Conventions::Paper;
  EXPECT_FALSE(same_bytes(a.out, run("model_stock", c).out));
}

TEST(ModelStock, IdenticalFineTunesGiveThatFineTune) {
  Case c = stock_case({50, 8}, 3);
  c.models[1].values = c.models[2].values = c.models[0].values;
  const std::vector<float> want = c.models[0].values;
  const Result r = run("model_stock", c);
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(r.out[i], want[i], 2e-6 * (1 + std::fabs(want[i]))) << i;
}

TEST(ModelStock, NeedsTwoFineTunes) {
  Case c = stock_case({10}, 1);
  EXPECT_THROW(run("model_stock", c), Error);
  c.models.clear();
  EXPECT_TRUE(same_bytes(run("model_stock", c).out, c.base->values));
}

TEST(Passthrough, CopiesOrScales) {
  Case c;
  c.shape = {3};
  c.models = {Model{{1.5f, -2.0f, 0.0f}, {}, 0}};
  EXPECT_EQ(run("passthrough", c).out, c.models[0].values);
  c.models[0].params["scale"] = 0.5;
  EXPECT_EQ(run("passthrough", c).out, (std::vector<float>{0.75f, -1.0f, 0.0f}));
  c.models.push_back(c.models[0]);
  EXPECT_THROW(run("passthrough", c), Error);
}

}  // namespace
}  // namespace deltaedit::merge::test
