// resample: Δ' = m⊙sign(Δ), m_i ~ U(0, 2μ) or N(μ, σ²) drawn per element, μ = s·mean|Δ|, σ =
// sigma·μ.
//
// μ is the mean of |Δ| over the tensor's finite entries (f64, fixed order). Each m_i comes from
// the keyed Philox stream at element i (uniform: 2μ·u; normal: μ + σ·z by Box–Muller), computed in
// f64 and rounded once to f32. clip=true replaces negative normal draws by 0 (otherwise a negative
// m flips that entry's sign). sign(0) = 0, so zero entries stay zero; NaN and ±Inf pass through.
#include <algorithm>
#include <cmath>
#include <limits>

#include "edit/op_impl.h"
#include "util/reduce.h"

namespace deltaedit::edit::detail {
namespace {

// Two-pass: μ needs the whole tensor's mean |Δ|, then each entry is redrawn by its index.
struct ResampleState {
  util::BlockedSum
      sum_abs;  // Σ|Δ| over finite entries (0 for the others), in util::ordered_sum's order
  uint64_t finite = 0;
  double mu = 0.0, sigma = 0.0;
};

class ResampleOp final : public ObservingOpOf<ResampleState> {
 public:
  ResampleOp(bool normal, double s, double sigma, bool clip)
      : ObservingOpOf("resample"), normal_(normal), s_(s), sigma_(sigma), clip_(clip) {}
  nlohmann::json own_params() const override {
    return {
        {"dist", normal_ ? "normal" : "uniform"}, {"s", s_}, {"sigma", sigma_}, {"clip", clip_}};
  }

 protected:
  ResampleState begin(const TensorContext&) const override { return {}; }
  void observe_piece(ResampleState& st, std::span<const float> piece, uint64_t) const override {
    st.sum_abs.add(piece.size(), [&](size_t i) { return util::finite_abs(piece[i]); });
    for (float v : piece) st.finite += std::isfinite(v) ? 1 : 0;
  }
  void end(ResampleState& st) const override {
    if (st.finite == 0) return;
    st.mu = s_ * st.sum_abs.sum() / static_cast<double>(st.finite);
    st.sigma = sigma_ * st.mu;
  }
  void apply_piece(const ResampleState& st, std::span<float> piece, uint64_t first,
                   const TensorContext& ctx) const override {
    if (st.finite == 0) return;
    const util::KeyedRng rng = rng_for(ctx);
    if (normal_) {
      for (size_t i = 0; i < piece.size(); ++i) {
        const float x = piece[i];
        if (!std::isfinite(x) || x == 0.0f) continue;
        double m = st.mu + st.sigma * rng.normal(first + i);
        if (clip_ && m < 0.0) m = 0.0;
        const float mf = static_cast<float>(m);
        piece[i] = x > 0.0f ? mf : -mf;
      }
      return;
    }
    // Uniform: words 0–1 of each counter, many at a time (util::philox_blocks), then
    // m = 2μ·uniform(i) exactly as KeyedRng::uniform computes it.
    constexpr size_t kBlock = 1024;
    alignas(32) uint32_t w0[kBlock], w1[kBlock];
    const double scale = 2.0 * st.mu;
    for (size_t off = 0; off < piece.size(); off += kBlock) {
      const size_t c = std::min(kBlock, piece.size() - off);
      util::philox_blocks(rng.key(), first + off, 0, c, w0, w1, nullptr, nullptr);
      float* d = piece.data() + off;
      for (size_t j = 0; j < c; ++j) {
        const float x = d[j];
        const double u =
            static_cast<double>(util::KeyedRng::uniform_bits(w0[j], w1[j])) * 0x1.0p-53;
        const float mf = static_cast<float>(scale * u);
        const bool edit = std::fabs(x) <= std::numeric_limits<float>::max() && x != 0.0f;
        d[j] = edit ? (x > 0.0f ? mf : -mf) : x;
      }
    }
  }

 private:
  bool normal_;
  double s_, sigma_;
  bool clip_;
};

}  // namespace

namespace {
std::unique_ptr<Op> make_resample(const ParamReader& r) {
  return std::make_unique<ResampleOp>(r.choice("dist") == "normal", r.real("s"), r.real("sigma"),
                                      r.flag("clip"));
}
}  // namespace

OpDecl resample_decl() {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  return {"resample",
          "Δ' = m⊙sign(Δ), m ~ U(0, 2μ) or N(μ, σ²), μ = s·mean|Δ|",
          {ParamSpec::choice("dist", {"uniform", "normal"}, "uniform",
                             "distribution of the new magnitudes"),
           ParamSpec::number("s", 1.0, 0.0, kInf, "μ = s·mean|Δ|", false, true),
           ParamSpec::number("sigma", 1.0, 0.0, kInf, "normal: σ as a multiple of μ", false, true),
           ParamSpec::boolean("clip", false, "normal: negative magnitude draws become 0")},
          &make_resample};
}

}  // namespace deltaedit::edit::detail
