// signflip: Δ' = c·(1−2M)⊙Δ, M~Bernoulli(q); c = 1 (rescale=none) or 1/(1−2q) (rescale=mean, keeps
// E[Δ'] = Δ).
//
// M_i = [uniform(i) < q] from the keyed Philox stream (the same draws as dare/drop). A flip is an
// exact negation; c is rounded once to f32 and applied to every entry when rescale=mean, which
// needs q < 0.5.
#include "edit/op_impl.h"

namespace deltaedit::edit::detail {
namespace {

class SignFlipOp final : public PointwiseOp {
 public:
  SignFlipOp(double q, bool rescale) : PointwiseOp("signflip"), q_(q), rescale_(rescale) {}
  nlohmann::json own_params() const override {
    return {{"q", q_}, {"rescale", rescale_ ? "mean" : "none"}};
  }
  void apply_block(std::span<float> piece, uint64_t first,
                   const TensorContext& ctx) const override {
    if (q_ == 0.0) return;
    const float c = static_cast<float>(1.0 / (1.0 - 2.0 * q_));
    for_each_selection(rng_for(ctx), piece.size(), q_, first,
                       [&](size_t off, const uint32_t* m, size_t count) {
                         float* d = piece.data() + off;
                         for (size_t j = 0; j < count; ++j) {
                           float v = m[j] != 0 ? -d[j] : d[j];
                           if (rescale_) v *= c;
                           d[j] = v;
                         }
                       });
  }

 private:
  double q_;
  bool rescale_;
};

}  // namespace

namespace {
std::unique_ptr<Op> make_signflip(const ParamReader& r) {
  const double q = r.real("q");
  const bool rescale = r.choice("rescale") == "mean";
  if (rescale && q >= 0.5) {
    r.fail("q", "= " + format_real(q) + " is out of range [0, 0.5) (rescale=mean divides by 1−2q)");
  }
  return std::make_unique<SignFlipOp>(q, rescale);
}
}  // namespace

OpDecl signflip_decl() {
  return {"signflip",
          "flip the sign of a random fraction q of entries; rescale=mean divides by 1−2q",
          {ParamSpec::number("q", std::nullopt, 0.0, 1.0, "fraction of entries whose sign flips")
               .make_required(),
           ParamSpec::choice("rescale", {"none", "mean"}, "none",
                             "mean: divide by 1−2q, keeping E[Δ'] = Δ")
               .with_constraint("rescale=mean needs q < 0.5")},
          &make_signflip};
}

}  // namespace deltaedit::edit::detail
