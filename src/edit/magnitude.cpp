// magnitude: keep exactly ⌊(1−p)·n⌋ entries of largest |Δ| per scope (ties: lower index first), Δ'=0 elsewhere, no rescale.
//
// Selection is linear time: std::nth_element on the |Δ| keys finds the threshold key T of the
// keep-th largest entry; every entry above T is kept, and of the entries equal to T the lowest
// indices fill the remaining places. This is exactly the top-keep of the order
// (|Δ| descending, index ascending) without sorting. Keys are the bit patterns of |Δ| (abs_bits),
// a strict total order in which NaN ranks above +Inf, so NaN entries are kept first and stay
// visible. scope=row selects per row (rows = shape[0]; a tensor with < 2 dims is one row).
#include <algorithm>
#include <functional>
#include <vector>

#include "edit/op_impl.h"

namespace deltaedit::edit::detail {
namespace {

class MagnitudeOp final : public OpBase {
 public:
  MagnitudeOp(double p, bool rows) : OpBase("magnitude"), p_(p), rows_(rows) {}
  nlohmann::json own_params() const override { return {{"p", p_}, {"scope", rows_ ? "row" : "tensor"}}; }
  uint64_t workspace_bytes(std::span<const int64_t> shape) const override {
    const int64_t n = shape_elements(shape);
    const int64_t per = rows_ && shape.size() >= 2 && shape[0] > 0 ? n / shape[0] : n;
    return static_cast<uint64_t>(per) * sizeof(uint32_t);
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    if (p_ == 0.0) return {};
    RowView view{1, static_cast<int64_t>(delta.size())};
    if (rows_) view = row_view(ctx.shape, delta.size(), ctx.name);
    std::vector<uint32_t> keys;
    for (int64_t r = 0; r < view.rows; ++r) keep_top(delta.subspan(static_cast<size_t>(r * view.cols),
                                                                    static_cast<size_t>(view.cols)),
                                                     keys);
    return {};
  }

 private:
  void keep_top(std::span<float> x, std::vector<uint32_t>& keys) const {
    const int64_t n = static_cast<int64_t>(x.size());
    const int64_t keep = floor_count(1.0 - p_, n);
    if (keep >= n) return;
    if (keep == 0) {
      std::fill(x.begin(), x.end(), 0.0f);
      return;
    }
    keys.resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) keys[i] = abs_bits(x[i]);
    // Descending order: the element at position keep−1 is the keep-th largest key.
    std::nth_element(keys.begin(), keys.begin() + (keep - 1), keys.end(), std::greater<uint32_t>());
    const uint32_t threshold = keys[static_cast<size_t>(keep - 1)];
    int64_t above = 0;
    for (size_t i = 0; i < x.size(); ++i) above += abs_bits(x[i]) > threshold ? 1 : 0;
    int64_t ties_left = keep - above;  // ≥ 1 by construction
    for (size_t i = 0; i < x.size(); ++i) {
      const uint32_t b = abs_bits(x[i]);
      if (b > threshold) continue;
      if (b == threshold && ties_left > 0) {
        --ties_left;
        continue;
      }
      x[i] = 0.0f;
    }
  }

  double p_;
  bool rows_;
};

}  // namespace

std::unique_ptr<OpBase> make_magnitude(ParamReader& r) {
  const double p = r.real("p", 0.9, closed(0.0, 1.0));
  const bool rows = r.choice("scope", "tensor", {"tensor", "row"}) == "row";
  return std::make_unique<MagnitudeOp>(p, rows);
}

}  // namespace deltaedit::edit::detail
