// slerp (MERGE.md §2.4): spherical interpolation between the base v0 and one model v1 of the
// flattened tensors, in f32 like mergekit's numpy code:
//   n_k = ‖v_k‖, v̂_k = v_k/n_k if n_k > 1e-8 else v_k; c = Σ v̂_0·v̂_1;
//   |c| > 0.9995: r = (1−t)·v0 + t·v1;
//   else θ = acos c, s0 = sin((1−t)·θ)/sin θ, s1 = sin(tθ)/sin θ, r = s0·v0 + s1·v1 (on the
//   unnormalised v); output ⟦r⟧ in W.
// The scalar steps are f32 operations in mergekit 0.1.5's order (1 − t in f32, then times θ).
// Norms and c are accumulated in f64 and rounded to f32, where torch sums in f32 by its own
// blocked order: c can differ from mergekit's in its last bits.
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo slerp_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "slerp";
  info.summary = "spherical interpolation between the base (t = 0) and one model (t = 1)";
  info.params = {{"t", K::Number, false, std::nullopt, true, 0.0, 1.0,
                  "interpolation factor: 0 gives the base, 1 the other model"}};
  info.needs_base = true;
  info.min_models = 1;
  info.max_models = 1;
  info.shape_rule = ShapeRule::CropEmbedToMin;
  return info;
}

class Slerp final : public MethodBase {
 public:
  Slerp() : MethodBase(slerp_info()) {}
  void merge(const TensorJob& job, std::span<float> out,
             std::vector<std::string>& warnings) const override {
    if (!job.base) usage(job, "needs a base_model (t = 0 gives the base)");
    if (job.models.size() > 1) {
      usage(job, "interpolates exactly two models (the base and one other), got " +
                     std::to_string(job.models.size() + 1) +
                     "; use multislerp or nuslerp for more");
    }
    const size_t n = out.size();
    check_sizes(job, n);
    const std::span<const float> v0 = job.base->values;
    if (job.models.empty()) {  // one tensor passes through
      std::copy(v0.begin(), v0.end(), out.begin());
      return;
    }
    const std::span<const float> v1 = job.models[0].values;
    const Round r{job.work};
    const double t_param = global(job, "t");
    const float t = static_cast<float>(t_param);
    const auto norm = [&](std::span<const float> v) {
      return std::sqrt(static_cast<float>(util::sum_sq(v)));
    };
    const float n0 = norm(v0), n1 = norm(v1);
    const float d0 = n0 > 1e-8f ? n0 : 1.0f, d1 = n1 > 1e-8f ? n1 : 1.0f;
    if ((!(n0 > 1e-8f) || !(n1 > 1e-8f)) && t != 0.0f && t != 1.0f) {
      warnings.push_back(
          prefix(job) +
          "a zero-norm input makes slerp a cos/sin blend rather than a lerp (as in mergekit)");
    }
    const float c = static_cast<float>(util::ordered_sum(
        n, [&](size_t i) { return static_cast<double>((v0[i] / d0) * (v1[i] / d1)); }));
    float s0, s1;
    if (std::fabs(c) > 0.9995f) {
      s0 = 1.0f - t;
      s1 = t;
    } else {
      const float theta = std::acos(c), sin_theta = std::sin(theta);
      s0 = std::sin((1.0f - t) * theta) / sin_theta;
      s1 = std::sin(t * theta) / sin_theta;
    }
    for (size_t i = 0; i < n; ++i) out[i] = r(s0 * v0[i] + s1 * v1[i]);
  }
};

}  // namespace

std::unique_ptr<Method> make_slerp() { return std::make_unique<Slerp>(); }

}  // namespace deltaedit::merge::detail
