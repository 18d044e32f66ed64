// sce (MERGE.md §2.8): with τ_i = ⟦x_i − b⟧,
//   select: if select_topk < 1, keep the k = int(nnz(var)·select_topk) entries of largest
//     cross-model variance (population variance over the models; ties: lower flat index) in every
//     τ_i, zero the rest (k = 0: all zero);
//   calculate: w_i = mean(τ_i²) / Σ_j mean(τ_j²) (all zero: output b);
//   erase: m_i = [sign τ_i = γ], γ = +1 if Σ τ_i ≥ 0 else −1 (unweighted TIES vote);
//   output b + Σ w_i·m_i·τ_i / max(Σ w_i·m_i, 1e-6).
// Computed in f64 per element and rounded once to W (not at mergekit's intermediate points).
#include <algorithm>
#include <cmath>

#include "merge/method_impl.h"

namespace deltaedit::merge::detail {
namespace {

MethodInfo sce_info() {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = "sce";
  info.summary = "SCE: select high-variance entries, weight models by energy, erase sign conflicts";
  info.params = {{"select_topk", K::Number, false, 1.0, false, 0.0, 1.0,
                  "fraction of entries with the largest cross-model variance kept"}};
  info.needs_base = true;
  info.min_models = 1;
  info.shape_rule = ShapeRule::Error;
  return info;
}

class Sce final : public MethodBase {
 public:
  Sce() : MethodBase(sce_info()) {}
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    if (!job.base) usage(job, "needs a base_model");
    const size_t n = out.size();
    check_sizes(job, n);
    const Round r{job.work};
    const std::span<const float> b = job.base->values;
    const size_t count = job.models.size();
    if (count == 0) {
      std::copy(b.begin(), b.end(), out.begin());
      return;
    }
    std::vector<std::vector<float>> tau(count, std::vector<float>(n));
    for (size_t m = 0; m < count; ++m) {
      for (size_t i = 0; i < n; ++i) tau[m][i] = r(job.models[m].values[i] - b[i]);
    }
    const double topk = global(job, "select_topk");
    if (topk < 1.0) {
      std::vector<uint32_t> keys(n);
      uint64_t nnz = 0;
      for (size_t i = 0; i < n; ++i) {
        double mean = 0, var = 0;
        for (size_t m = 0; m < count; ++m) mean += tau[m][i];
        mean /= static_cast<double>(count);
        for (size_t m = 0; m < count; ++m) var += (tau[m][i] - mean) * (tau[m][i] - mean);
        const float v = static_cast<float>(var / static_cast<double>(count));
        nnz += v != 0.0f;
        keys[i] = ~abs_key(v);  // descending, lower index first
      }
      const auto k = static_cast<uint64_t>(static_cast<double>(nnz) * topk);
      std::vector<uint8_t> keep(n);
      keep_rank_range(keys, 0, k, keep);
      for (auto& t : tau) {
        for (size_t i = 0; i < n; ++i) t[i] = keep[i] ? t[i] : 0.0f;
      }
    }
    std::vector<double> w(count);
    double total = 0;
    for (size_t m = 0; m < count; ++m) {
      w[m] = util::sum_sq(tau[m]) / static_cast<double>(std::max<size_t>(n, 1));
      total += w[m];
    }
    if (!(total > 0.0)) {
      std::copy(b.begin(), b.end(), out.begin());
      return;
    }
    for (double& x : w) x /= total;
    for (size_t i = 0; i < n; ++i) {
      double vote = 0;
      for (size_t m = 0; m < count; ++m) vote += tau[m][i];
      const bool positive = vote >= 0;
      double num = 0, den = 0;
      for (size_t m = 0; m < count; ++m) {
        const float t = tau[m][i];
        if (positive ? t > 0.0f : t < 0.0f) {
          num += w[m] * t;
          den += w[m];
        }
      }
      out[i] = r(static_cast<float>(b[i] + num / std::max(den, 1e-6)));
    }
  }
};

}  // namespace

std::unique_ptr<Method> make_sce() { return std::make_unique<Sce>(); }

}  // namespace deltaedit::merge::detail
