// resample: Δ' = m⊙sign(Δ), m_i ~ U(0, 2μ) or N(μ, σ²) drawn per element, μ = s·mean|Δ|, σ = sigma·μ.
//
// μ is the mean of |Δ| over the tensor's finite entries (f64, fixed order). Each m_i comes from
// the keyed Philox stream at element i (uniform: 2μ·u; normal: μ + σ·z by Box–Muller), computed in
// f64 and rounded once to f32. clip=true replaces negative normal draws by 0 (otherwise a negative
// m flips that entry's sign). sign(0) = 0, so zero entries stay zero; NaN and ±Inf pass through.
#include <cmath>

#include "edit/op_impl.h"
#include "util/reduce.h"

namespace deltaedit::edit::detail {
namespace {

class ResampleOp final : public OpBase {
 public:
  ResampleOp(bool normal, double s, double sigma, bool clip)
      : OpBase("resample"), normal_(normal), s_(s), sigma_(sigma), clip_(clip) {}
  nlohmann::json own_params() const override {
    return {{"dist", normal_ ? "normal" : "uniform"}, {"s", s_}, {"sigma", sigma_}, {"clip", clip_}};
  }
  bool uses_rng() const override { return true; }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    const util::FiniteAbsStats st = util::finite_abs_stats(delta);
    if (st.finite == 0) return {};
    const double mu = s_ * st.sum_abs / static_cast<double>(st.finite);
    const double sigma = sigma_ * mu;
    const util::KeyedRng rng = rng_for(ctx);
    for (size_t i = 0; i < delta.size(); ++i) {
      const float x = delta[i];
      if (!std::isfinite(x) || x == 0.0f) continue;
      double m = normal_ ? mu + sigma * rng.normal(i) : 2.0 * mu * rng.uniform(i);
      if (clip_ && m < 0.0) m = 0.0;
      const float mf = static_cast<float>(m);
      delta[i] = x > 0.0f ? mf : -mf;
    }
    return {};
  }

 private:
  bool normal_;
  double s_, sigma_;
  bool clip_;
};

}  // namespace

std::unique_ptr<OpBase> make_resample(ParamReader& r) {
  const bool normal = r.choice("dist", "uniform", {"uniform", "normal"}) == "normal";
  const double s = r.real("s", 1.0, {0.0, kInf, true, false});
  const double sigma = r.real("sigma", 1.0, {0.0, kInf, true, false});
  const bool clip = r.flag("clip", false);
  return std::make_unique<ResampleOp>(normal, s, sigma, clip);
}

}  // namespace deltaedit::edit::detail
