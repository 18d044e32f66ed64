// linear (MERGE.md §2.3, as the pinned mergekit 0.1.5 computes it): in f32 whatever W is, with
// the weights as f32, R = fma(w_i, x_i, R) over the inputs in config order (torch's addcmul_ on
// an FMA machine: one rounding per step), with normalize: R ← R / Σ w_i (Σ in f32, config order);
// the result is rounded once to W. mergekit has no guard for Σw̃ = 0 (inf/NaN): the mergekit
// convention reproduces it with a warning, the paper convention (a uniform soup) refuses it.
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo linear_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "linear";
  info.summary = "weighted average Σ w_i·x_i / Σ w_i of the models (a model soup)";
  info.params = {
      {"weight", K::Number, true, std::nullopt, true, -1e300, 1e300,
       "weight of this model (required for every input, the base included)"},
      {"normalize", K::Bool, false, 1.0, false, 0.0, 1.0, "divide by the sum of the weights"},
  };
  info.min_models = 1;
  info.pointwise = true;
  info.shape_rule = ShapeRule::CropEmbedToMin;
  return info;
}

class Linear final : public MethodBase {
 public:
  Linear() : MethodBase(linear_info()) {}
  void merge(const TensorJob& job, std::span<float> out,
             std::vector<std::string>& warnings) const override {
    check_sizes(job, out.size());
    if (job.models.empty()) usage(job, "needs at least one model");
    const Round r{job.work};
    std::vector<float> w;
    for (const TensorInput& in : job.models)
      w.push_back(static_cast<float>(per_model(job, in, "weight")));
    const bool normalize = global(job, "normalize") != 0.0;
    float total = 0.0f;
    for (float x : w) total += x;
    if (normalize && total == 0.0f) {
      if (job.conventions == Conventions::Paper) {
        usage(job,
              "the weights sum to 0 with normalize: true; change a weight or set normalize: false");
      }
      if (job.first == 0) {
        warnings.push_back(prefix(job) +
                           "the weights sum to 0 with normalize: true; the result is inf/NaN "
                           "as in mergekit");
      }
    }
    for (size_t i = 0; i < out.size(); ++i) {
      float s = 0.0f;
      for (size_t m = 0; m < job.models.size(); ++m) s = std::fma(w[m], job.models[m].values[i], s);
      out[i] = r(normalize ? s / total : s);
    }
  }
};

}  // namespace

std::unique_ptr<Method> make_linear() { return std::make_unique<Linear>(); }

}  // namespace deltaedit::merge::detail
