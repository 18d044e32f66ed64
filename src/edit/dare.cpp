// dare: Δ' = k·M⊙Δ + (1−k·p)/(1−p)·(1−M)⊙Δ, M~Bernoulli(p); drop: Δ' = (1−M)⊙Δ; biased: dare's
// formula with a chosen M.
//
// Masks: element i is selected (M=1) iff uniform(i) < p, drawn from the keyed Philox stream
// (util::bernoulli_select: many counters at a time, the same decisions as one at a time), so
// dare and drop with the same (seed, tensor, op index) select the same entries.
// rescale=l1 (mergekit's convention, generalised to k): the dropped fraction p is replaced by the
// realised fraction of L1 mass selected, p_m = Σ_M|Δ| / Σ|Δ| (finite entries), so that
// k·Σ_M|Δ| + c·Σ_{1−M}|Δ| = Σ|Δ|; for k=0 the kept entries keep the tensor's L1 norm exactly.
// Multipliers are rounded once to f32; each element is one f32 multiply. Non-finite inputs are
// multiplied like any other value (a NaN stays NaN) and are left out of the l1 sums.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "edit/op_impl.h"
#include "util/reduce.h"

namespace deltaedit::edit::detail {
namespace {

class DareOp final : public OpBase {
 public:
  DareOp(double p, double k, bool l1) : OpBase("dare"), p_(p), k_(k), l1_(l1) {}
  nlohmann::json own_params() const override {
    return {{"p", p_}, {"k", k_}, {"rescale", l1_ ? "l1" : "paper"}};
  }

  // rescale=paper is pointwise; rescale=l1 is two-pass: the first pass draws the mask and sums
  // the selected and the kept L1 mass, the second draws it again and scales.
  bool pointwise() const override { return !l1_; }
  void apply_block(std::span<float> piece, uint64_t first,
                   const TensorContext& ctx) const override {
    if (l1_) OpBase::apply_block(piece, first, ctx);  // not pointwise: throws
    if (p_ == 0.0) return;                            // identity
    scale(piece, first, ctx, static_cast<float>(k_),
          static_cast<float>((1.0 - k_ * p_) / (1.0 - p_)));
  }

  struct State final : Op::State {
    explicit State(util::KeyedRng r) : rng(r) {}
    util::KeyedRng rng;              // the tensor's stream (observe has no context)
    util::BlockedSum dropped, kept;  // Σ|Δ| over the finite selected / unselected entries
    float cf = 1.0f;
  };
  bool two_pass() const override { return l1_; }
  std::unique_ptr<Op::State> observe_begin(const TensorContext& ctx) const override {
    if (!l1_) return OpBase::observe_begin(ctx);
    return std::make_unique<State>(rng_for(ctx));
  }
  void observe(Op::State& s, std::span<const float> piece, uint64_t first) const override {
    auto& st = dynamic_cast<State&>(s);
    if (p_ == 0.0) return;
    for_each_selection(
        st.rng, piece.size(), p_, first, [&](size_t off, const uint32_t* m, size_t count) {
          const float* d = piece.data() + off;
          st.dropped.add(count, [&](size_t j) { return m[j] != 0 ? util::finite_abs(d[j]) : 0.0; });
          st.kept.add(count, [&](size_t j) { return m[j] != 0 ? 0.0 : util::finite_abs(d[j]); });
        });
  }
  void observe_end(Op::State& s) const override {
    auto& st = dynamic_cast<State&>(s);
    const double dropped = st.dropped.sum(), kept = st.kept.sum();
    // With no kept mass the kept entries are all zero and their multiplier is irrelevant.
    st.cf = static_cast<float>(kept > 0.0 ? (dropped + kept - k_ * dropped) / kept : 1.0);
  }
  void apply_observed(const Op::State& s, std::span<float> piece, uint64_t first,
                      const TensorContext& ctx) const override {
    if (p_ == 0.0) return;
    scale(piece, first, ctx, static_cast<float>(k_), dynamic_cast<const State&>(s).cf);
  }

 private:
  // Δ'_i = kf·Δ_i where selected, cf·Δ_i elsewhere.
  void scale(std::span<float> piece, uint64_t first, const TensorContext& ctx, float kf,
             float cf) const {
    for_each_selection(rng_for(ctx), piece.size(), p_, first,
                       [&](size_t off, const uint32_t* m, size_t count) {
                         float* d = piece.data() + off;
                         for (size_t j = 0; j < count; ++j) d[j] *= m[j] != 0 ? kf : cf;
                       });
  }

 private:
  double p_, k_;
  bool l1_;
};

class DropOp final : public OpBase {
 public:
  explicit DropOp(double p) : OpBase("drop"), p_(p) {}
  nlohmann::json own_params() const override { return {{"p", p_}}; }
  bool pointwise() const override { return true; }
  void apply_block(std::span<float> piece, uint64_t first,
                   const TensorContext& ctx) const override {
    if (p_ == 0.0) return;
    for_each_selection(rng_for(ctx), piece.size(), p_, first,
                       [&](size_t off, const uint32_t* m, size_t count) {
                         float* d = piece.data() + off;
                         for (size_t j = 0; j < count; ++j) d[j] = m[j] != 0 ? 0.0f : d[j];
                       });
  }

 private:
  double p_;
};

// M = [Δ<0] or [sign(Δ)·sign(G) < 0] (signs, so tiny products cannot underflow to 0);
// p = |M|/n. p=0: identity. p=1 (every entry selected): Δ' = k·Δ — the kept part is empty, so
// the rescale factor (1−k·p)/(1−p) multiplies nothing and is not evaluated. For 0<p<1 the
// multipliers sum to exactly k·|M| + c·(n−|M|) = n (before f32 rounding of c).
class BiasedOp final : public OpBase {
 public:
  BiasedOp(bool by_grad, double k) : OpBase("biased"), by_grad_(by_grad), k_(k) {}
  nlohmann::json own_params() const override {
    return {{"by", by_grad_ ? "grad" : "delta"}, {"k", k_}};
  }
  bool needs_grad() const override { return by_grad_; }

  // by=delta is two-pass: count the selected entries (Δ<0), then scale each by its own sign.
  struct State final : Op::State {
    uint64_t count = 0, n = 0;
  };
  bool two_pass() const override { return !by_grad_; }
  std::unique_ptr<Op::State> observe_begin(const TensorContext& ctx) const override {
    if (by_grad_) return Op::observe_begin(ctx);
    return std::make_unique<State>();
  }
  void observe(Op::State& s, std::span<const float> piece, uint64_t) const override {
    auto& st = dynamic_cast<State&>(s);
    for (float d : piece) st.count += d < 0.0f ? 1 : 0;
    st.n += piece.size();
  }
  void observe_end(Op::State&) const override {}
  void apply_observed(const Op::State& s, std::span<float> piece, uint64_t,
                      const TensorContext&) const override {
    const auto& st = dynamic_cast<const State&>(s);
    rescale(piece, st.count, st.n, [&](size_t i) { return piece[i] < 0.0f; });
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    if (!by_grad_) return Op::apply(delta, ctx);  // two-pass
    if (ctx.grad.size() != delta.size()) {
      throw Error(ErrorKind::Usage,
                  "op 'biased': by=grad needs the gradient of this tensor (" +
                      std::to_string(delta.size()) + " values), got " +
                      std::to_string(ctx.grad.size()),
                  "", std::string(ctx.name));
    }
    const auto selected = [&](size_t i) {
      const float d = delta[i], g = ctx.grad[i];
      return (d < 0.0f && g > 0.0f) || (d > 0.0f && g < 0.0f);
    };
    uint64_t count = 0;
    for (size_t i = 0; i < delta.size(); ++i) count += selected(i) ? 1 : 0;
    rescale(delta, count, delta.size(), selected);
    return {};
  }

 private:
  // x_i ← k·x_i where selected(i), c·x_i elsewhere, for count selected among n in the tensor
  // (selected(i) is read before x_i changes).
  template <class Selected>
  void rescale(std::span<float> x, uint64_t count, uint64_t n, Selected&& selected) const {
    if (count == 0) return;
    const float kf = static_cast<float>(k_);
    if (count == n) {
      for (float& d : x) d *= kf;
      return;
    }
    const double p = static_cast<double>(count) / static_cast<double>(n);
    const float cf = static_cast<float>((1.0 - k_ * p) / (1.0 - p));
    for (size_t i = 0; i < x.size(); ++i) x[i] *= selected(i) ? kf : cf;
  }

  bool by_grad_;
  double k_;
};

}  // namespace

std::unique_ptr<OpBase> make_dare(ParamReader& r) {
  const double p = r.real("p", 0.9, half_open(0.0, 1.0));
  const double k = r.real("k", 0.0, any_real());
  const bool l1 = r.choice("rescale", "paper", {"paper", "l1"}) == "l1";
  return std::make_unique<DareOp>(p, k, l1);
}

std::unique_ptr<OpBase> make_drop(ParamReader& r) {
  return std::make_unique<DropOp>(r.real("p", 0.9, closed(0.0, 1.0)));
}

std::unique_ptr<OpBase> make_biased(ParamReader& r) {
  const bool by_grad = r.choice("by", "delta", {"delta", "grad"}) == "grad";
  const double k = r.real("k", 0.5, any_real());
  return std::make_unique<BiasedOp>(by_grad, k);
}

}  // namespace deltaedit::edit::detail
