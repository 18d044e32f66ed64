// magnitude: keep exactly ⌊(1−p)·n⌋ entries of largest |Δ| per scope (ties: lower index first), Δ'=0 elsewhere, no rescale.
//
// Selection is linear time and needs no copy of the tensor: the threshold key T of the keep-th
// largest entry is found by a two-pass radix select (a histogram of the high 16 key bits, then of
// the low 16 bits inside the bin that holds the keep-th largest); short scopes use
// std::nth_element on a small key buffer instead (same T). Every entry above T is kept, and of the
// entries equal to T the lowest indices fill the remaining places. This is exactly the top-keep of
// the order (|Δ| descending, index ascending) without sorting. Keys are the bit patterns of |Δ|
// (abs_bits), a strict total order in which NaN ranks above +Inf, so NaN entries are kept first
// and stay visible. scope=row selects per row (rows = shape[0]; a tensor with < 2 dims is one row).
#include <algorithm>
#include <functional>
#include <utility>
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
    if (per < kRadixMin) return static_cast<uint64_t>(per) * sizeof(uint32_t);
    return (kHighBins + kLowBins) * sizeof(uint64_t);
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    if (p_ == 0.0) return {};
    RowView view{1, static_cast<int64_t>(delta.size())};
    if (rows_) view = row_view(ctx.shape, delta.size(), ctx.name);
    Workspace ws;
    for (int64_t r = 0; r < view.rows; ++r) keep_top(delta.subspan(static_cast<size_t>(r * view.cols),
                                                                    static_cast<size_t>(view.cols)),
                                                     ws);
    return {};
  }

 private:
  // Scopes shorter than this select with nth_element on a key copy (cheaper than clearing the
  // histograms); longer ones by radix select, which needs no copy.
  static constexpr int64_t kRadixMin = int64_t{1} << 16;
  static constexpr size_t kHighBins = size_t{1} << 15;  // keys are 31-bit: high part is 15 bits
  static constexpr size_t kLowBins = size_t{1} << 16;

  struct Workspace {
    std::vector<uint32_t> keys;
    std::vector<uint64_t> high, low;
  };

  // The keep-th largest key (1 ≤ keep ≤ n) and the number of keys strictly above it.
  static std::pair<uint32_t, int64_t> threshold(std::span<const float> x, int64_t keep, Workspace& ws) {
    const int64_t n = static_cast<int64_t>(x.size());
    if (n < kRadixMin) {
      ws.keys.resize(x.size());
      for (size_t i = 0; i < x.size(); ++i) ws.keys[i] = abs_bits(x[i]);
      // Descending order: the element at position keep−1 is the keep-th largest key.
      std::nth_element(ws.keys.begin(), ws.keys.begin() + (keep - 1), ws.keys.end(), std::greater<uint32_t>());
      const uint32_t t = ws.keys[static_cast<size_t>(keep - 1)];
      int64_t above = 0;
      for (float v : x) above += abs_bits(v) > t ? 1 : 0;
      return {t, above};
    }
    ws.high.assign(kHighBins, 0);
    for (float v : x) ++ws.high[abs_bits(v) >> 16];
    // The high bin holding the keep-th largest key, and how many keys lie in higher bins.
    int64_t above = 0;
    size_t h = kHighBins;
    while (h-- > 0) {
      const int64_t c = static_cast<int64_t>(ws.high[h]);
      if (above + c >= keep) break;
      above += c;
    }
    ws.low.assign(kLowBins, 0);
    for (float v : x) {
      const uint32_t b = abs_bits(v);
      if ((b >> 16) == h) ++ws.low[b & 0xFFFFu];
    }
    size_t l = kLowBins;
    while (l-- > 0) {
      const int64_t c = static_cast<int64_t>(ws.low[l]);
      if (above + c >= keep) break;
      above += c;
    }
    return {static_cast<uint32_t>((h << 16) | l), above};
  }

  void keep_top(std::span<float> x, Workspace& ws) const {
    const int64_t n = static_cast<int64_t>(x.size());
    const int64_t keep = floor_count(1.0 - p_, n);
    if (keep >= n) return;
    if (keep == 0) {
      std::fill(x.begin(), x.end(), 0.0f);
      return;
    }
    const auto [t, above] = threshold(x, keep, ws);
    int64_t ties_left = keep - above;  // ≥ 1 by construction
    for (size_t i = 0; i < x.size(); ++i) {
      const uint32_t b = abs_bits(x[i]);
      if (b > t) continue;
      if (b == t && ties_left > 0) {
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
