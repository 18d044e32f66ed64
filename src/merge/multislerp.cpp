// multislerp (MERGE.md §2.8): spherical interpolation of N flattened vectors v_i (the models, or
// their task vectors x_i − b when a base is given), with weights w_i (divided by Σw when
// normalize_weights):
//   u_i = v_i/(‖v_i‖ + eps); μ = unit(Σ w_i u_i); T = Σ w_i (u_i − ⟨u_i, μ⟩μ); λ = ‖T‖ + eps;
//   r = (μ cos λ + T sin λ / λ)·Σ w_i ‖v_i‖; output r (plus b with a base).
// Computed in f64 and rounded once to W.
#include <algorithm>
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo multislerp_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "multislerp";
  info.summary = "spherical interpolation of any number of models (task vectors with a base)";
  info.params = {
      {"weight", K::Number, true, std::nullopt, true, -1e300, 1e300, "weight of this model"},
      {"normalize_weights", K::Bool, false, 1.0, false, 0.0, 1.0,
       "divide the weights by their sum"},
      {"eps", K::Number, false, 1e-8, false, 0.0, 1e300,
       "added to norms to avoid division by zero"},
  };
  info.optional_base = true;
  info.min_models = 2;
  info.shape_rule = ShapeRule::Error;
  return info;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  return util::ordered_sum(a.size(), [&](size_t i) { return a[i] * b[i]; });
}

class Multislerp final : public MethodBase {
 public:
  Multislerp() : MethodBase(multislerp_info()) {}
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    const size_t n = out.size();
    check_sizes(job, n);
    const Round r{job.work};
    const size_t count = job.models.size();
    if (count == 0) {
      if (!job.base) usage(job, "needs at least one model");
      std::copy(job.base->values.begin(), job.base->values.end(), out.begin());
      return;
    }
    const double eps = global(job, "eps");
    std::vector<double> w(count);
    double wsum = 0;
    for (size_t m = 0; m < count; ++m) wsum += w[m] = per_model(job, job.models[m], "weight");
    if (global(job, "normalize_weights") != 0.0) {
      if (wsum == 0.0) usage(job, "the weights sum to 0 with normalize_weights: true");
      for (double& x : w) x /= wsum;
    }
    std::vector<std::vector<double>> u(count, std::vector<double>(n));
    std::vector<double> mu(n, 0.0), t(n, 0.0);
    double scale = 0;
    for (size_t m = 0; m < count; ++m) {
      for (size_t i = 0; i < n; ++i) {
        u[m][i] =
            static_cast<double>(job.models[m].values[i]) - (job.base ? job.base->values[i] : 0.0f);
      }
      const double nv = std::sqrt(dot(u[m], u[m]));
      scale += w[m] * nv;
      for (double& x : u[m]) x /= nv + eps;
      for (size_t i = 0; i < n; ++i) mu[i] += w[m] * u[m][i];
    }
    const double nmu = std::sqrt(dot(mu, mu));
    for (double& x : mu) x /= nmu + eps;
    for (size_t m = 0; m < count; ++m) {
      const double c = dot(u[m], mu);
      for (size_t i = 0; i < n; ++i) t[i] += w[m] * (u[m][i] - c * mu[i]);
    }
    const double lambda = std::sqrt(dot(t, t)) + eps;
    const double cl = std::cos(lambda), sl = std::sin(lambda) / lambda;
    for (size_t i = 0; i < n; ++i) {
      const double v = (mu[i] * cl + t[i] * sl) * scale + (job.base ? job.base->values[i] : 0.0f);
      out[i] = r(static_cast<float>(v));
    }
  }
};

}  // namespace

std::unique_ptr<Method> make_multislerp() { return std::make_unique<Multislerp>(); }

}  // namespace deltaedit::merge::detail
