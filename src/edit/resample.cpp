// resample: Δ' = m⊙sign(Δ), m_i ~ U(0, 2μ) or N(μ, σ²) drawn per element, μ = s·mean|Δ|, σ =
// sigma·μ.
//
// μ is the mean of |Δ| over the tensor's finite entries (f64, fixed order). Each m_i comes from
// the keyed Philox stream at element i (uniform: 2μ·u; normal: μ + σ·z by Box–Muller), computed in
// f64 and rounded once to f32. clip=true replaces negative normal draws by 0 (otherwise a negative
// m flips that entry's sign). sign(0) = 0, so zero entries stay zero; NaN and ±Inf pass through.
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "edit/op_impl.h"
#include "util/clones.h"
#include "util/reduce.h"

namespace deltaedit::edit::detail {
namespace {

// d[j] ← ±2μ·uniform(j) where d[j] is finite and non-zero (the sign of d[j]), as KeyedRng::uniform
// computes the draw: bits53 = w0·2^21 + (w1 >> 11), split as (w0 >> 1)·2^22 + ((w0 & 1)·2^21 +
// (w1 >> 11)) so both parts convert from int32 (which vectorises) and their sum, below 2^53, is
// the exact double of bits53, as static_cast<double>(bits53) is. Same bits as the scalar form.
DELTAEDIT_CLONES void resample_uniform(float* __restrict d, const uint32_t* __restrict w0,
                                       const uint32_t* __restrict w1, size_t c, double scale) {
  // In bits (so GCC vectorises the select): mf ≥ 0, so ±mf is mf's bits with x's sign bit; x is
  // finite and non-zero exactly when its magnitude bits are in [1, 0x7F7FFFFF].
  for (size_t j = 0; j < c; ++j) {
    const uint32_t xb = std::bit_cast<uint32_t>(d[j]);
    const double hi = static_cast<double>(static_cast<int32_t>(w0[j] >> 1));
    const double lo =
        static_cast<double>(static_cast<int32_t>(((w0[j] & 1u) << 21) | (w1[j] >> 11)));
    const double u = (hi * 0x1.0p22 + lo) * 0x1.0p-53;
    const uint32_t mb = std::bit_cast<uint32_t>(static_cast<float>(scale * u));
    // All ones where x is kept (an arithmetic mask: with a conditional GCC will not speculate the
    // f64 arithmetic above into vector code, as it may trap).
    const uint32_t keep = 0u - uint32_t((xb & 0x7FFFFFFFu) - 1u >= 0x7F7FFFFFu);
    d[j] = std::bit_cast<float>((keep & xb) | (~keep & (mb | (xb & 0x80000000u))));
  }
}

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
    st.sum_abs.add_finite_abs(piece);
    st.finite += util::count_finite(piece);
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
      resample_uniform(piece.data() + off, w0, w1, c, scale);
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
