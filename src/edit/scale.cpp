// scale: Δ' = (1+α)·Δ — α>0 extrapolates (EXPO), α∈[−1,0) interpolates, α=−1 gives the base.
//
// The factor 1+α is computed in f64 and rounded once to f32; each element is one f32 multiply
// (so W_post + α·Δ is rounded once, not in bf16 as EXPO's reference does).
#include "edit/op_impl.h"

namespace deltaedit::edit::detail {
namespace {

class ScaleOp final : public PointwiseOp {
 public:
  explicit ScaleOp(double alpha) : PointwiseOp("scale"), alpha_(alpha) {}
  nlohmann::json own_params() const override { return {{"alpha", alpha_}}; }
  void apply_block(std::span<float> piece, uint64_t, const TensorContext&) const override {
    if (alpha_ == 0.0) return;
    const float f = static_cast<float>(1.0 + alpha_);
    for (float& d : piece) d *= f;
  }

 private:
  double alpha_;
};

}  // namespace

OpDecl scale_decl() {
  constexpr double kInf = std::numeric_limits<double>::infinity();
  return {"scale",
          "Δ' = (1+α)·Δ (α>0 extrapolates, α=−1 gives the base)",
          {ParamSpec::number("alpha", 0.0, -kInf, kInf, "α: 0 keeps Δ, > 0 extrapolates (EXPO)")},
          [](const ParamReader& r) -> std::unique_ptr<Op> {
            return std::make_unique<ScaleOp>(r.real("alpha"));
          }};
}

}  // namespace deltaedit::edit::detail
