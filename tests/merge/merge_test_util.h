// Helpers for the merge-method tests: job building, test data, and an independent bf16 rounding
// (nearest-even on the f32 value, computed in f64 arithmetic — not the product's converter).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "merge/method.h"
#include "util/philox.h"

namespace deltaedit::merge::test {

using Params = std::map<std::string, double>;

struct Model {
  Model() = default;
  Model(std::vector<float> v, Params p = {}, uint32_t i = 0)
      : values(std::move(v)), params(std::move(p)), index(i) {}
  std::vector<float> values;
  Params params;
  uint32_t index = 0;
  std::optional<float> threshold;
};

struct Case {
  std::string name = "model.layers.0.mlp.weight";
  std::vector<int64_t> shape;
  WorkType work = WorkType::F32;
  std::optional<Model> base;
  std::vector<Model> models;
  Params global;
  Conventions conventions = Conventions::Mergekit;
  uint64_t seed = 7;
};

struct Result {
  std::vector<float> out;
  std::vector<std::string> warnings;
};

inline const Method& method(std::string_view name) {
  const Method* m = find_method(name);
  if (m == nullptr) throw std::runtime_error("no method " + std::string(name));
  return *m;
}

inline uint64_t count_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

// The job of `c`, restricted to elements [first, first + len) when len is set.
inline TensorJob job_of(const Case& c, uint64_t first = 0,
                        std::optional<uint64_t> len = std::nullopt) {
  const uint64_t n = len.value_or(count_of(c.shape));
  const auto input = [&](const Model& m) {
    TensorInput in;
    in.values = std::span<const float>(m.values).subspan(first, n);
    in.params = m.params;
    in.model_index = m.index;
    in.magnitude_threshold = m.threshold;
    return in;
  };
  TensorJob job;
  job.name = c.name;
  job.shape = c.shape;
  job.work = c.work;
  if (c.base) job.base = input(*c.base);
  for (const Model& m : c.models) job.models.push_back(input(m));
  job.global = c.global;
  job.conventions = c.conventions;
  job.seed = c.seed;
  job.first = first;
  return job;
}

inline Result run(std::string_view name, const Case& c) {
  Result r;
  r.out.assign(count_of(c.shape), -12345.0f);
  method(name).merge(job_of(c), r.out, r.warnings);
  return r;
}

// Gaussian values N(mean, scale²) from a keyed stream of the test's own.
inline std::vector<float> gaussian(size_t n, uint64_t seed, double scale = 1.0, double mean = 0.0) {
  const util::KeyedRng rng(seed, "merge-test-data", 0);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(mean + scale * rng.normal(i));
  return v;
}

// Round a finite f32 value to the nearest bf16 (ties to even), in f64 arithmetic.
inline double bf16_of_float(float f) {
  const double x = f;
  if (x == 0.0 || !std::isfinite(x)) return x;
  int e;
  std::frexp(x, &e);                          // |x| = m·2^e, m in [0.5, 1)
  const double ulp = std::ldexp(1.0, e - 8);  // 8 significant bits
  const double q = x / ulp;                   // exact (power-of-two scaling)
  double r = std::nearbyint(q);               // ties to even (default rounding mode)
  return r * ulp;
}
// "computed in f32 and rounded to bf16"
inline double bf16(double x) { return bf16_of_float(static_cast<float>(x)); }

inline std::vector<float> to_bf16(std::vector<float> v) {
  for (float& x : v) x = static_cast<float>(bf16_of_float(x));
  return v;
}

inline bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The documented keep draw of model `index` (method.h: Randomness).
inline bool drawn_keep(uint64_t seed, const std::string& name, uint32_t index,
                       RandomPurpose purpose, uint64_t i, double p) {
  const util::KeyedRng rng(util::rng_key(seed, name, index));
  return rng.uniform(i, kMergeLane + static_cast<uint32_t>(purpose)) < p;
}

inline void expect_near_rel(const std::vector<float>& got, const std::vector<double>& want,
                            double rel, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0.0;
  for (double w : want) scale = std::max(scale, std::fabs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], rel * (scale + 1e-30)) << what << " at " << i;
  }
}

}  // namespace deltaedit::merge::test
