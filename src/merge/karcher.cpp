// karcher (MERGE.md §2.8): the Riemannian (Karcher) mean of the flattened inputs on the unit
// sphere. Weights are ignored (as in mergekit): every input, the base included, gets 1/N. Inputs
// with ‖v‖ ≤ tol are left out. u starts at unit(Σ α_i û_i) and iterates at most max_iter times
//   T = Σ α_i log_u(û_i), log_u(x) = (x − cos θ·u)·θ/sin θ with cos θ = clamp(⟨u, x⟩, ±1)
//   (0 when θ < tol); stop when ‖T‖ < tol; else u ← unit(cos‖T‖·u + sin‖T‖·T/‖T‖).
// Output (Σ α_i ‖v_i‖)·u. One valid input is returned as it is; none gives zeros.
// Computed in f64 and rounded once to W.
#include <algorithm>
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo karcher_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "karcher";
  info.summary = "Karcher mean on the sphere of all inputs (equal weights, base included)";
  info.params = {
      {"max_iter", K::Integer, false, 10.0, false, 1.0, 1e6,
       "maximum number of fixed-point iterations"},
      {"tol", K::Number, false, 1e-5, false, 0.0, 1e300,
       "convergence tolerance (and minimum input norm)"},
  };
  info.optional_base = true;
  info.min_models = 1;
  info.shape_rule = ShapeRule::CropEmbedToMin;
  return info;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  return util::ordered_sum(a.size(), [&](size_t i) { return a[i] * b[i]; });
}

class Karcher final : public MethodBase {
 public:
  Karcher() : MethodBase(karcher_info()) {}
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    const size_t n = out.size();
    check_sizes(job, n);
    const Round r{job.work};
    const int max_iter = static_cast<int>(global(job, "max_iter"));
    const double tol = global(job, "tol");
    std::vector<std::span<const float>> inputs;
    if (job.base) inputs.push_back(job.base->values);
    for (const TensorInput& in : job.models) inputs.push_back(in.values);
    std::vector<std::vector<double>> units;
    std::vector<double> norms;
    std::span<const float> last_valid;
    for (std::span<const float> v : inputs) {
      const double nv = std::sqrt(util::sum_sq(v));
      if (!(nv > tol)) continue;
      std::vector<double> u(n);
      for (size_t i = 0; i < n; ++i) u[i] = v[i] / nv;
      units.push_back(std::move(u));
      norms.push_back(nv);
      last_valid = v;
    }
    if (units.empty()) {
      std::fill(out.begin(), out.end(), 0.0f);
      return;
    }
    if (units.size() == 1) {
      std::copy(last_valid.begin(), last_valid.end(), out.begin());
      return;
    }
    const double alpha = 1.0 / static_cast<double>(units.size());
    std::vector<double> u(n, 0.0), t(n);
    for (const auto& x : units) {
      for (size_t i = 0; i < n; ++i) u[i] += alpha * x[i];
    }
    double nu = std::sqrt(dot(u, u));
    if (nu < tol) {
      u = units[0];
    } else {
      for (double& x : u) x /= nu;
    }
    for (int it = 0; it < max_iter; ++it) {
      std::fill(t.begin(), t.end(), 0.0);
      for (const auto& x : units) {
        const double c = std::clamp(dot(u, x), -1.0, 1.0), theta = std::acos(c);
        if (theta < tol) continue;
        const double f = alpha * theta / std::sin(theta);
        for (size_t i = 0; i < n; ++i) t[i] += f * (x[i] - c * u[i]);
      }
      const double nt = std::sqrt(dot(t, t));
      if (nt < tol) break;
      for (size_t i = 0; i < n; ++i) u[i] = std::cos(nt) * u[i] + std::sin(nt) * t[i] / nt;
      nu = std::sqrt(dot(u, u));
      for (double& x : u) x /= nu;
    }
    double scale = 0;
    for (double nv : norms) scale += alpha * nv;
    for (size_t i = 0; i < n; ++i) out[i] = r(static_cast<float>(scale * u[i]));
  }
};

}  // namespace

std::unique_ptr<Method> make_karcher() { return std::make_unique<Karcher>(); }

}  // namespace deltaedit::merge::detail
