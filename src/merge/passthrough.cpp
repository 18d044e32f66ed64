// passthrough (MERGE.md §2.7): exactly one input; ⟦x·scale⟧ if its per-model scale is set
// (applied at f32, like a Python scalar), else x. With `slices:` it stacks layers.
#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo passthrough_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "passthrough";
  info.summary = "copy one input tensor (optionally scaled); with slices: stacks layers";
  info.params = {{"scale", K::Number, true, std::nullopt, false, -1e300, 1e300,
                  "multiply this model's tensor by scale (optional)"}};
  info.min_models = 1;
  info.max_models = 1;
  info.pointwise = true;
  info.shape_rule = ShapeRule::Single;
  return info;
}

class Passthrough final : public MethodBase {
 public:
  Passthrough() : MethodBase(passthrough_info()) {}
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    if (job.models.size() != 1 || job.base) {
      usage(job, "takes exactly one input tensor, got " +
                     std::to_string(job.models.size() + (job.base ? 1 : 0)) +
                     "; give each slice source a single model");
    }
    check_sizes(job, out.size());
    const TensorInput& in = job.models[0];
    const std::optional<double> scale = per_model_opt(in, "scale");
    if (!scale) {
      std::copy(in.values.begin(), in.values.end(), out.begin());
      return;
    }
    const Round r{job.work};
    const float s = static_cast<float>(*scale);
    for (size_t i = 0; i < out.size(); ++i) out[i] = r(in.values[i] * s);
  }
};

}  // namespace

std::unique_ptr<Method> make_passthrough() { return std::make_unique<Passthrough>(); }

}  // namespace deltaedit::merge::detail
