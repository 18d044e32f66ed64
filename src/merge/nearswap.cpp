// nearswap (MERGE.md §2.8): with a the base and b the one other model, per element
//   ω = clamp(⟦⟦1 / max(⟦|a − b|⟧, 1e-6)⟧·t⟧, 0, 1), output ⟦⟦ω·b⟧ + ⟦⟦1 − ω⟧·a⟧⟧
// (t / tensor in torch is reciprocal(tensor)·t: two roundings, as mergekit 0.1.5 computes it):
// entries where the models are within t of each other take b, distant ones stay near a.
#include <algorithm>
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo nearswap_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "nearswap";
  info.summary = "take the other model's value where it lies within t of the base's";
  info.params = {{"t", K::Number, false, std::nullopt, true, 0.0, 1e300,
                  "similarity threshold: ω = clamp(t/|base − model|, 0, 1)"}};
  info.needs_base = true;
  info.min_models = 1;
  info.max_models = 1;
  info.pointwise = true;
  info.shape_rule = ShapeRule::Error;
  return info;
}

class Nearswap final : public MethodBase {
 public:
  Nearswap() : MethodBase(nearswap_info()) {}
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    if (!job.base) usage(job, "needs a base_model");
    if (job.models.size() != 1) {
      usage(job, "takes the base and exactly one other model, got " +
                     std::to_string(job.models.size()) + " others");
    }
    check_sizes(job, out.size());
    const Round r{job.work};
    const float t = static_cast<float>(global(job, "t"));
    const std::span<const float> a = job.base->values, b = job.models[0].values;
    for (size_t i = 0; i < out.size(); ++i) {
      const float dist = std::max(r(std::fabs(a[i] - b[i])), 1e-6f);
      const float w = std::clamp(r(r(1.0f / dist) * t), 0.0f, 1.0f);
      out[i] = r(r(w * b[i]) + r(r(1.0f - w) * a[i]));
    }
  }
};

}  // namespace

std::unique_ptr<Method> make_nearswap() { return std::make_unique<Nearswap>(); }

}  // namespace deltaedit::merge::detail
