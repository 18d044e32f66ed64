// permute: Δ'_i = sign(Δ_i)·|Δ|_π(i) for a seeded uniform permutation π of the finite entries.
//
// Fisher–Yates over the magnitudes of the finite entries in index order: for t = m−1 … 1, swap
// position t with j = below(t, t+1) drawn from the keyed Philox stream at counter t. Signs are
// the sign bits of the original entries (copysign), so the multiset of |Δ| and every sign bit
// are preserved exactly. NaN and ±Inf entries stay where they are.
#include <cmath>
#include <utility>
#include <vector>

#include "edit/op_impl.h"

namespace deltaedit::edit::detail {
namespace {

class PermuteOp final : public WholeTensorOp {
 public:
  PermuteOp() : WholeTensorOp("permute") {}
  nlohmann::json own_params() const override { return nlohmann::json::object(); }
  uint64_t workspace_bytes(std::span<const int64_t> shape) const override {
    return static_cast<uint64_t>(shape_elements(shape)) * sizeof(float);
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    std::vector<float> mags;
    mags.reserve(delta.size());
    for (float v : delta) {
      if (std::isfinite(v)) mags.push_back(std::fabs(v));
    }
    const util::KeyedRng rng = rng_for(ctx);
    for (size_t t = mags.size(); t-- > 1;) std::swap(mags[t], mags[rng.below(t, t + 1)]);
    size_t next = 0;
    for (float& v : delta) {
      if (std::isfinite(v)) v = std::copysign(mags[next++], v);
    }
    return {};
  }
};

}  // namespace

OpDecl permute_decl() {
  return {"permute",
          "shuffle the magnitudes |Δ| within the tensor (seeded), keep signs",
          {},
          [](const ParamReader&) -> std::unique_ptr<Op> { return std::make_unique<PermuteOp>(); }};
}

}  // namespace deltaedit::edit::detail
