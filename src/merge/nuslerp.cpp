// nuslerp (MERGE.md §2.5): slerp of two models a, b (or of their task vectors against a base) at
// t = w_b/(w_a + w_b) (0.5 when |w_a + w_b| < 1e-6), computed in W like mergekit's torch code.
// Vectors: the whole tensor (nuslerp_flatten), else fibres along the last axis
// (nuslerp_row_wise = false) or along axis 0 (true). Per vector, with ⟦·⟧ rounding to W:
//   û = ⟦v / max(⟦‖v‖⟧, 1e-7)⟧, c = clamp(⟦Σ⟦û_0·û_1⟧⟧, ±1), θ = ⟦acos c⟧, s = ⟦sin θ⟧;
//   |s| < 1e-8: r = ⟦⟦(1−t)v0⟧ + ⟦t·v1⟧⟧; else r = ⟦⟦⟦sin⟦(1−t)θ⟧⟧·v0⟧ + ⟦⟦sin⟦tθ⟧⟧·v1⟧⟧ / s⟧.
// With a base: output ⟦base + S(t, ⟦a − base⟧, ⟦b − base⟧)⟧.
#include <algorithm>
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo nuslerp_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "nuslerp";
  info.summary = "slerp of two models (or their task vectors) at t = w_b/(w_a + w_b)";
  info.params = {
      {"weight", K::Number, true, std::nullopt, true, -1e300, 1e300,
       "relative weight of this model"},
      {"nuslerp_flatten", K::Bool, false, 1.0, false, 0.0, 1.0,
       "treat the whole tensor as one vector"},
      {"nuslerp_row_wise", K::Bool, false, 0.0, false, 0.0, 1.0,
       "without flatten: interpolate along axis 0 instead of the last axis"},
  };
  info.optional_base = true;
  info.min_models = 2;
  info.max_models = 2;
  info.shape_rule = ShapeRule::CropEmbedToMin;
  return info;
}

class Nuslerp final : public MethodBase {
 public:
  Nuslerp() : MethodBase(nuslerp_info()) {}
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    const size_t n = out.size();
    check_sizes(job, n);
    const size_t inputs = job.models.size() + (job.base ? 1 : 0);
    if (inputs == 1) {  // one tensor passes through
      const std::span<const float> v = job.base ? job.base->values : job.models[0].values;
      std::copy(v.begin(), v.end(), out.begin());
      return;
    }
    if (job.models.size() != 2) {
      usage(job, "interpolates exactly two models besides the base, got " +
                     std::to_string(job.models.size()));
    }
    const Round r{job.work};
    const double wa = per_model(job, job.models[0], "weight"),
                 wb = per_model(job, job.models[1], "weight");
    const double t = std::fabs(wa + wb) < 1e-6 ? 0.5 : wb / (wa + wb);
    std::vector<float> v0(job.models[0].values.begin(), job.models[0].values.end());
    std::vector<float> v1(job.models[1].values.begin(), job.models[1].values.end());
    if (job.base) {
      const std::span<const float> b = job.base->values;
      for (size_t i = 0; i < n; ++i) {
        v0[i] = r(v0[i] - b[i]);
        v1[i] = r(v1[i] - b[i]);
      }
    }
    // Fibres: count × len values at offset(f) + j·stride.
    uint64_t len = n, stride = 1, count = 1;
    const bool flatten = global(job, "nuslerp_flatten") != 0.0;
    const bool row_wise = global(job, "nuslerp_row_wise") != 0.0;
    if (!flatten && job.shape.size() >= 2) {
      if (row_wise) {
        len = static_cast<uint64_t>(job.shape[0]);
        stride = len == 0 ? 1 : n / len;
        count = stride;
      } else {
        len = static_cast<uint64_t>(job.shape.back());
        count = len == 0 ? 0 : n / len;
      }
    }
    const auto offset = [&](uint64_t f) { return row_wise && !flatten ? f : f * len; };
    const float one_minus_t = static_cast<float>(1.0 - t), tf = static_cast<float>(t);
    std::vector<float> u0(len), u1(len);
    for (uint64_t f = 0; f < count; ++f) {
      const uint64_t o = offset(f);
      const auto at = [&](uint64_t j) { return o + j * stride; };
      const auto unit = [&](const std::vector<float>& v, std::vector<float>& u) {
        const float nrm = r(std::sqrt(static_cast<float>(util::ordered_sum(
            len, [&](size_t j) { return static_cast<double>(v[at(j)]) * v[at(j)]; }))));
        const float d = nrm < 1e-7f ? r(1e-7f) : nrm;
        for (uint64_t j = 0; j < len; ++j) u[j] = r(v[at(j)] / d);
      };
      unit(v0, u0);
      unit(v1, u1);
      const float c =
          std::clamp(tensor_sum(job.work, len,
                                [&](size_t j) { return static_cast<double>(r(u0[j] * u1[j])); }),
                     -1.0f, 1.0f);
      const float theta = r(std::acos(c)), sin_theta = r(std::sin(theta));
      if (std::fabs(sin_theta) < 1e-8f) {
        for (uint64_t j = 0; j < len; ++j) {
          const uint64_t i = at(j);
          out[i] = r(r(one_minus_t * v0[i]) + r(tf * v1[i]));
        }
      } else {
        const float s0 = r(std::sin(r(one_minus_t * theta))), s1 = r(std::sin(r(tf * theta)));
        for (uint64_t j = 0; j < len; ++j) {
          const uint64_t i = at(j);
          out[i] = r(r(r(s0 * v0[i]) + r(s1 * v1[i])) / sin_theta);
        }
      }
    }
    if (job.base) {
      const std::span<const float> b = job.base->values;
      for (size_t i = 0; i < n; ++i) out[i] = r(b[i] + out[i]);
    }
  }
};

}  // namespace

std::unique_ptr<Method> make_nuslerp() { return std::make_unique<Nuslerp>(); }

}  // namespace deltaedit::merge::detail
