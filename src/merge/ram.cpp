// ram and ramplus_tl (MERGE.md §2.8). With τ_i = ⟦x_i − b⟧, entry p of model i is active when
// |τ_ip| > ε; c_p counts the active models at p.
//   ram: output ⟦b + Σ_i active·u_ip⟧ with u_ip = τ_ip where c_p = 1 and ⟦τ_ip / c_p⟧ where
//     c_p > 1 (c_p = 0: b), i.e. unique entries are kept whole and shared ones averaged, each τ
//     divided by c_p before the sum, as mergekit 0.1.5 computes it. Pointwise.
//   ramplus_tl: unique entries of model i are scaled by λ_i = 1 + r·clamp(S_i / max(U_i, ε), 0, α),
//     S_i and U_i the counts of model i's shared and unique active entries over the tensor (so it
//     needs the whole tensor); λ_i is computed in f32 step by step, as torch does.
// Model sums run in config order in f32, each product rounded to W.
#include <algorithm>
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo ram_info(bool plus) {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = plus ? "ramplus_tl" : "ram";
  info.summary = plus ? "ram with unique entries boosted by each model's shared/unique ratio"
                      : "keep entries one model changes, average entries several models change";
  info.params = {{"epsilon", K::Number, false, 1e-5, false, 0.0, 1e300,
                  "an entry is active where |τ| > epsilon"}};
  if (plus) {
    info.params.push_back(
        {"r", K::Number, false, 0.1, false, 0.0, 1e300, "boost per unit shared/unique ratio"});
    info.params.push_back(
        {"alpha", K::Number, false, 0.2, false, 0.0, 1e300, "cap of the shared/unique ratio"});
  }
  info.needs_base = true;
  info.min_models = 1;
  info.pointwise = !plus;
  info.shape_rule = ShapeRule::Error;
  return info;
}

class Ram final : public MethodBase {
 public:
  explicit Ram(bool plus) : MethodBase(ram_info(plus)), plus_(plus) {}
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    if (!job.base) usage(job, "needs a base_model");
    const size_t n = out.size();
    check_sizes(job, n);
    if (plus_ && n != numel(job.shape)) {
      throw Error(ErrorKind::Unsupported,
                  prefix(job) + "this job needs the whole tensor, not a block", "",
                  std::string(job.name));
    }
    const Round r{job.work};
    const float eps = static_cast<float>(global(job, "epsilon"));
    const std::span<const float> b = job.base->values;
    const size_t count = job.models.size();
    const auto tau = [&](size_t m, size_t i) { return r(job.models[m].values[i] - b[i]); };
    const auto active = [&](size_t m, size_t i) { return std::fabs(tau(m, i)) > eps; };
    std::vector<float> boost(count, 1.0f);
    if (plus_) {
      const double rr = global(job, "r"), alpha = global(job, "alpha");
      std::vector<uint64_t> shared(count, 0), unique(count, 0);
      for (size_t i = 0; i < n; ++i) {
        int c = 0;
        for (size_t m = 0; m < count; ++m) c += active(m, i);
        for (size_t m = 0; m < count; ++m) {
          if (active(m, i)) ++(c == 1 ? unique : shared)[m];
        }
      }
      for (size_t m = 0; m < count; ++m) {
        const float ratio =
            static_cast<float>(shared[m]) / std::max(static_cast<float>(unique[m]), eps);
        const float capped = std::clamp(ratio, 0.0f, static_cast<float>(alpha));
        boost[m] = 1.0f + static_cast<float>(rr) * capped;
      }
    }
    for (size_t i = 0; i < n; ++i) {
      int c = 0;
      for (size_t m = 0; m < count; ++m) c += active(m, i) ? 1 : 0;
      if (c == 0) {
        out[i] = b[i];
        continue;
      }
      float s = 0.0f;
      for (size_t m = 0; m < count; ++m) {
        if (!active(m, i)) continue;
        const float t = tau(m, i);
        s = r(s + (c == 1 ? (plus_ ? r(t * boost[m]) : t) : r(t / static_cast<float>(c))));
      }
      out[i] = r(b[i] + s);
    }
  }

 private:
  bool plus_;
};

}  // namespace

std::unique_ptr<Method> make_ram() { return std::make_unique<Ram>(false); }
std::unique_ptr<Method> make_ramplus_tl() { return std::make_unique<Ram>(true); }

}  // namespace deltaedit::merge::detail
