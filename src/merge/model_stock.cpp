// model_stock (MERGE.md §2.6, §3): with w_0 the base and N ≥ 2 fine-tunes w_i, per vector (the
// whole tensor, or each last-axis row when filter_wise; 1-D is one row), in W:
//   δ_i = ⟦w_i − w_0⟧; c_ij = clamp(⟦⟦Σ⟦δ_i·δ_j⟧⟧ / max(⟦⟦‖δ_i‖⟧·⟦‖δ_j‖⟧⟧, 1e-6)⟧, ±1);
//   mergekit: c = ⟦mean_{i<j} c_ij⟧ (cosines); paper: c = ⟦cos(mean_{i<j} acos c_ij)⟧ (angles);
//   t = ⟦⟦N·c⟧ / ⟦1 + ⟦(N−1)·c⟧⟧⟧; w̄ = ⟦(((w_1 + w_2) + w_3) …) / N⟧ (each sum rounded);
//   output ⟦⟦t·w̄⟧ + ⟦⟦1 − t⟧·w_0⟧⟧.
// mergekit has no guard at 1 + (N−1)c = 0 (a warning here; the result is inf/NaN).
#include <algorithm>
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo model_stock_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "model_stock";
  info.summary = "Model Stock: interpolate the fine-tunes' mean toward the base by their angle";
  info.params = {{"filter_wise", K::Bool, false, 0.0, false, 0.0, 1.0,
                  "one interpolation factor per last-axis row instead of per tensor"}};
  info.needs_base = true;
  info.min_models = 2;
  info.shape_rule = ShapeRule::CropEmbedToMin;
  return info;
}

class ModelStock final : public MethodBase {
 public:
  ModelStock() : MethodBase(model_stock_info()) {}
  void merge(const TensorJob& job, std::span<float> out,
             std::vector<std::string>& warnings) const override {
    if (!job.base) usage(job, "needs a base_model");
    const size_t n = out.size();
    check_sizes(job, n);
    const std::span<const float> w0 = job.base->values;
    const size_t count = job.models.size();
    if (count == 0) {
      std::copy(w0.begin(), w0.end(), out.begin());
      return;
    }
    if (count < 2) {
      usage(job, "needs at least two fine-tuned models besides the base for this tensor, got " +
                     std::to_string(count));
    }
    const Round r{job.work};
    const bool filter_wise = global(job, "filter_wise") != 0.0;
    const uint64_t len =
        filter_wise && !job.shape.empty() ? static_cast<uint64_t>(job.shape.back()) : n;
    const uint64_t rows = len == 0 ? 0 : n / len;
    std::vector<std::vector<float>> delta(count, std::vector<float>(n));
    for (size_t m = 0; m < count; ++m) {
      for (size_t i = 0; i < n; ++i) delta[m][i] = r(job.models[m].values[i] - w0[i]);
    }
    const float big_n = static_cast<float>(count);
    bool pole = false;
    for (uint64_t row = 0; row < rows; ++row) {
      const uint64_t o = row * len;
      std::vector<float> norms(count);
      for (size_t m = 0; m < count; ++m) {
        norms[m] = r(std::sqrt(static_cast<float>(util::ordered_sum(len, [&](size_t j) {
          const double v = delta[m][o + j];
          return v * v;
        }))));
      }
      float cos_sum = 0.0f;
      double angle_sum = 0.0;
      size_t pairs = 0;
      for (size_t a = 0; a < count; ++a) {
        for (size_t b = a + 1; b < count; ++b) {
          const float dot = tensor_sum(job.work, len, [&](size_t j) {
            return static_cast<double>(r(delta[a][o + j] * delta[b][o + j]));
          });
          const float prod = r(norms[a] * norms[b]);
          const float denom = prod < 1e-6f ? r(1e-6f) : prod;
          const float c = std::clamp(r(dot / denom), -1.0f, 1.0f);
          cos_sum += c;
          angle_sum += std::acos(static_cast<double>(c));
          ++pairs;
        }
      }
      const float c = job.conventions == Conventions::Paper
                          ? r(static_cast<float>(std::cos(angle_sum / static_cast<double>(pairs))))
                          : r(cos_sum / static_cast<float>(pairs));
      const float den = r(1.0f + r((big_n - 1.0f) * c));
      if (den == 0.0f) pole = true;
      const float t = r(r(big_n * c) / den);
      const float one_minus_t = r(1.0f - t);
      for (uint64_t j = 0; j < len; ++j) {
        const uint64_t i = o + j;
        float sum = job.models[0].values[i];
        for (size_t m = 1; m < count; ++m) sum = r(sum + job.models[m].values[i]);
        const float mean = r(sum / big_n);
        out[i] = r(r(t * mean) + r(one_minus_t * w0[i]));
      }
    }
    if (pole) {
      warnings.push_back(prefix(job) +
                         "1 + (N−1)·c = 0: the fine-tunes point apart, t is infinite (inf/NaN, "
                         "as in mergekit)");
    }
  }
};

}  // namespace

std::unique_ptr<Method> make_model_stock() { return std::make_unique<ModelStock>(); }

}  // namespace deltaedit::merge::detail
