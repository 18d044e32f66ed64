// scale: Δ' = (1+α)·Δ — α>0 extrapolates (EXPO), α∈[−1,0) interpolates, α=−1 gives the base.
//
// The factor 1+α is computed in f64 and rounded once to f32; each element is one f32 multiply
// (so W_post + α·Δ is rounded once, not in bf16 as EXPO's reference does).
#include "edit/op_impl.h"

namespace deltaedit::edit::detail {
namespace {

class ScaleOp final : public OpBase {
 public:
  explicit ScaleOp(double alpha) : OpBase("scale"), alpha_(alpha) {}
  nlohmann::json own_params() const override { return {{"alpha", alpha_}}; }
  bool pointwise() const override { return true; }
  void apply_block(std::span<float> piece, uint64_t, const TensorContext&) const override {
    if (alpha_ == 0.0) return;
    const float f = static_cast<float>(1.0 + alpha_);
    for (float& d : piece) d *= f;
  }

 private:
  double alpha_;
};

}  // namespace

std::unique_ptr<OpBase> make_scale(ParamReader& r) {
  return std::make_unique<ScaleOp>(r.real("alpha", 0.0, any_real()));
}

}  // namespace deltaedit::edit::detail
