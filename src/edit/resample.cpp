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

  // Two-pass: μ needs the whole tensor's mean |Δ|, then each entry is redrawn by its index.
  struct State final : Op::State {
    util::IndexOrderedSum sum_abs;  // Σ|Δ| over finite entries, in util::ordered_sum's order
    uint64_t finite = 0;
    double mu = 0.0, sigma = 0.0;
  };
  bool two_pass() const override { return true; }
  std::unique_ptr<Op::State> observe_begin(const TensorContext&) const override { return std::make_unique<State>(); }
  void observe(Op::State& s, std::span<const float> piece, uint64_t first) const override {
    auto& st = dynamic_cast<State&>(s);
    for (size_t i = 0; i < piece.size(); ++i) {
      const bool fin = std::isfinite(piece[i]);
      st.sum_abs.add(fin ? std::fabs(static_cast<double>(piece[i])) : 0.0, first + i);
      st.finite += fin ? 1 : 0;
    }
  }
  void observe_end(Op::State& s) const override {
    auto& st = dynamic_cast<State&>(s);
    if (st.finite == 0) return;
    st.mu = s_ * st.sum_abs.sum() / static_cast<double>(st.finite);
    st.sigma = sigma_ * st.mu;
  }
  void apply_observed(const Op::State& s, std::span<float> piece, uint64_t first, const TensorContext& ctx) const override {
    const auto& st = dynamic_cast<const State&>(s);
    if (st.finite == 0) return;
    const util::KeyedRng rng = rng_for(ctx);
    for (size_t i = 0; i < piece.size(); ++i) {
      const float x = piece[i];
      if (!std::isfinite(x) || x == 0.0f) continue;
      const uint64_t at = first + i;
      double m = normal_ ? st.mu + st.sigma * rng.normal(at) : 2.0 * st.mu * rng.uniform(at);
      if (clip_ && m < 0.0) m = 0.0;
      const float mf = static_cast<float>(m);
      piece[i] = x > 0.0f ? mf : -mf;
    }
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
