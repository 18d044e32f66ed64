// bitdelta: Δ' = s·stat(|Δ|)·sign(Δ); bits=b ≥ 1: sort |Δ|, 2^b equal-count blocks, each |Δ| →
// s·stat(its block), sign kept.
//
// Per scope (the tensor, or each row for granularity=row), over its finite entries:
//  - bits=0 is one block holding every entry (plain BitDelta);
//  - bits=b: entries ordered by (|Δ|, index) ascending; with m entries and B=2^b blocks, block j
//    holds sorted positions [⌊j·m/B⌋, ⌊(j+1)·m/B⌋) (sizes differ by at most one; with m < B some
//    blocks are empty and the others hold one value each, which makes Δ' = Δ when s=1).
// stat: mean = Σ|Δ|/m, rms = sqrt(ΣΔ²/m), median = middle value (mean of the two middle values
// for even m), all in f64 and rounded once to f32 after multiplying by s.
// sign(0) is 0 (sign0=zero) or +1 (sign0=plus, BitDelta's code). NaN and ±Inf entries take no
// part in any statistic and pass through unchanged.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "edit/op_impl.h"
#include "util/clones.h"
#include "util/reduce.h"

namespace deltaedit::edit::detail {
namespace {

enum class Stat { Mean, Median, Rms };

// x[i] ← value·sign(x[i]) (zero for x[i] = 0) on the finite entries, NaN and ±Inf unchanged;
// branch-free, with vector clones.
DELTAEDIT_CLONES void set_signs_to(float* x, size_t n, float value, float zero) {
  const float neg = -value;
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float r = v > 0.0f ? value : (v < 0.0f ? neg : zero);
    x[i] = std::fabs(v) <= std::numeric_limits<float>::max() ? r : v;
  }
}

// The op's arithmetic, shared by its two execution kinds below.
class BitDelta {
 public:
  BitDelta(Stat stat, double s, bool sign0_plus, bool rows, int bits)
      : stat_(stat), s_(s), plus_(sign0_plus), rows_(rows), bits_(bits) {}

  nlohmann::json own_params() const {
    const char* st = stat_ == Stat::Mean ? "mean" : stat_ == Stat::Median ? "median" : "rms";
    return {{"stat", st},
            {"s", s_},
            {"sign0", plus_ ? "plus" : "zero"},
            {"granularity", rows_ ? "row" : "tensor"},
            {"bits", bits_}};
  }
  uint64_t workspace_bytes(std::span<const int64_t> shape) const {
    const int64_t n = shape_elements(shape);
    const int64_t per = rows_ && shape.size() >= 2 && shape[0] > 0 ? n / shape[0] : n;
    if (bits_ == 0 && stat_ != Stat::Median) return 0;  // one streaming pass, nothing gathered
    if (bits_ == 0) return static_cast<uint64_t>(per) * sizeof(float);
    return static_cast<uint64_t>(per) * (sizeof(uint64_t) + sizeof(float));  // keys + magnitudes
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const {
    RowView view{1, static_cast<int64_t>(delta.size())};
    if (rows_) view = row_view(ctx.shape, delta.size(), ctx.name);
    if (bits_ > 0 && static_cast<uint64_t>(view.cols) >=
                         (uint64_t{1} << 32)) {  // keys pack the index in 32 bits
      throw Error(ErrorKind::Unsupported,
                  "op 'bitdelta': a scope of 2^32 or more elements is not supported", "",
                  std::string(ctx.name));
    }
    std::vector<uint64_t> keys;
    std::vector<float> mags;
    for (int64_t r = 0; r < view.rows; ++r) {
      scope(delta.subspan(static_cast<size_t>(r * view.cols), static_cast<size_t>(view.cols)), keys,
            mags);
    }
    return {};
  }

 public:
  float signed_value(float x, float v) const {
    if (x > 0.0f) return v;
    if (x < 0.0f) return -v;
    return plus_ ? v : 0.0f;
  }

  // s·stat over a run of magnitudes (sorted ascending when stat is the median).
  float block_value(const float* m, size_t count) const {
    if (count == 0) return 0.0f;
    double st = 0.0;
    switch (stat_) {
      case Stat::Mean:
        st = util::ordered_sum(count, [&](size_t i) { return static_cast<double>(m[i]); }) /
             static_cast<double>(count);
        break;
      case Stat::Rms:
        st = std::sqrt(
            util::ordered_sum(count, [&](size_t i) { return static_cast<double>(m[i]) * m[i]; }) /
            static_cast<double>(count));
        break;
      case Stat::Median:
        st = count % 2 == 1 ? m[count / 2]
                            : 0.5 * (static_cast<double>(m[count / 2 - 1]) + m[count / 2]);
        break;
    }
    return static_cast<float>(s_ * st);
  }

  // Σ|x| (mean) or Σx² (rms) over the finite entries, without gathering them: util::ordered_sum
  // over the scope's indices with 0 for the non-finite entries, fed in pieces (which is how the
  // streaming engine runs it), and the count of finite entries.
  struct FiniteSum {
    util::BlockedSum sum;
    size_t count = 0;
    void add(std::span<const float> x, bool squares) {
      sum.add_finite_abs(x, squares);
      count += util::count_finite(x);
    }
  };
  float finite_value(const FiniteSum& f) const {
    if (f.count == 0) return 0.0f;
    const double total = f.sum.sum();
    const double st = stat_ == Stat::Rms ? std::sqrt(total / static_cast<double>(f.count))
                                         : total / static_cast<double>(f.count);
    return static_cast<float>(s_ * st);
  }
  float finite_block_value(std::span<const float> x) const {
    FiniteSum f;
    f.add(x, stat_ == Stat::Rms);
    return finite_value(f);
  }

  // Per-tensor state of the two-pass form: one sum per scope, then one value per scope.
  struct ScaleState {
    uint64_t cols = 0;  // scope length
    std::vector<FiniteSum> sums;
    std::vector<float> values;
  };
  // Calls fn(scope index, sub-piece) for the parts of [first, first + n) in each scope.
  template <class Piece, class Fn>
  static void by_scope(uint64_t cols, Piece piece, uint64_t first, Fn&& fn) {
    size_t i = 0;
    while (i < piece.size() && cols > 0) {
      const uint64_t at = first + i, r = at / cols;
      const size_t m =
          static_cast<size_t>(std::min<uint64_t>(piece.size() - i, (r + 1) * cols - at));
      fn(static_cast<size_t>(r), piece.subspan(i, m));
      i += m;
    }
  }

 public:
  bool streams() const { return bits_ == 0 && stat_ != Stat::Median; }
  ScaleState observe_begin(const TensorContext& ctx) const {
    const size_t n = static_cast<size_t>(shape_elements(ctx.shape));
    RowView view{1, static_cast<int64_t>(n)};
    if (rows_) view = row_view(ctx.shape, n, ctx.name);
    ScaleState st;
    st.cols = static_cast<uint64_t>(view.cols);
    st.sums.resize(static_cast<size_t>(view.rows));
    return st;
  }
  void observe(ScaleState& st, std::span<const float> piece, uint64_t first) const {
    const bool squares = stat_ == Stat::Rms;
    by_scope(st.cols, piece, first,
             [&](size_t r, std::span<const float> x) { st.sums[r].add(x, squares); });
  }
  void observe_end(ScaleState& st) const {
    st.values.resize(st.sums.size());
    for (size_t r = 0; r < st.sums.size(); ++r) st.values[r] = finite_value(st.sums[r]);
  }
  void apply_observed(const ScaleState& st, std::span<float> piece, uint64_t first) const {
    by_scope(st.cols, piece, first,
             [&](size_t r, std::span<float> x) { set_signs(x, st.values[r]); });
  }

 public:
  // x ← signed_value(x, value) on the finite entries (NaN and ±Inf unchanged), branch-free.
  void set_signs(std::span<float> x, float value) const {
    set_signs_to(x.data(), x.size(), value, plus_ ? value : 0.0f);
  }

  void scope(std::span<float> x, std::vector<uint64_t>& keys, std::vector<float>& mags) const {
    if (bits_ == 0) {
      float value = 0.0f;
      if (stat_ != Stat::Median) {
        value = finite_block_value(x);
        set_signs(x, value);
        return;
      }
      mags.clear();
      mags.reserve(x.size());
      for (float v : x) {
        if (std::isfinite(v)) mags.push_back(std::fabs(v));
      }
      if (!mags.empty()) {
        // Linear-time median: the upper middle by nth_element, the lower middle is the largest
        // value before it.
        const size_t mid = mags.size() / 2;
        std::nth_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(mid), mags.end());
        const double hi = mags[mid];
        const double lo =
            mags.size() % 2 == 1
                ? hi
                : *std::max_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(mid));
        value = static_cast<float>(s_ * (mags.size() % 2 == 1 ? hi : 0.5 * (lo + hi)));
      }
      set_signs(x, value);
      return;
    }
    keys.clear();
    keys.reserve(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::isfinite(x[i])) keys.push_back((uint64_t{abs_bits(x[i])} << 32) | i);
    }
    std::sort(keys.begin(), keys.end());
    const size_t m = keys.size();
    mags.resize(m);
    for (size_t t = 0; t < m; ++t) mags[t] = std::fabs(x[keys[t] & 0xFFFFFFFFu]);
    const uint64_t blocks = uint64_t{1} << bits_;
    for (uint64_t j = 0; j < blocks; ++j) {
      const size_t lo = static_cast<size_t>(j * m / blocks),
                   hi = static_cast<size_t>((j + 1) * m / blocks);
      const float value = block_value(mags.data() + lo, hi - lo);
      for (size_t t = lo; t < hi; ++t) {
        float& v = x[keys[t] & 0xFFFFFFFFu];
        v = signed_value(v, value);
      }
    }
  }

  Stat stat_;
  double s_;
  bool plus_, rows_;
  int bits_;
};

// bits=b > 0 or the median: whole scopes at once (a sort or a selection). bits=0 with a mean or
// rms scale: one observe pass sums per scope, then signs are set (its whole-tensor form computes
// the same sums in one go).
using BitDeltaWholeOp = CoreOp<WholeTensorOp, BitDelta>;
using BitDeltaScaleOp = ObservingCoreOp<BitDelta, BitDelta::ScaleState>;

std::unique_ptr<Op> make_bitdelta(const ParamReader& r) {
  const std::string st = r.choice("stat");
  const Stat stat = st == "mean" ? Stat::Mean : st == "median" ? Stat::Median : Stat::Rms;
  BitDelta b(stat, r.real("s"), r.choice("sign0") == "plus", r.choice("granularity") == "row",
             static_cast<int>(r.integer("bits")));
  if (b.streams()) return std::make_unique<BitDeltaScaleOp>("bitdelta", std::move(b));
  return std::make_unique<BitDeltaWholeOp>("bitdelta", std::move(b));
}

}  // namespace

OpDecl bitdelta_decl() {
  return {
      "bitdelta",
      "Δ' = s·stat(|Δ|)·sign(Δ); bits=b: 2^b equal-count magnitude blocks",
      {ParamSpec::choice("stat", {"mean", "median", "rms"}, "mean",
                         "the magnitude each sign is scaled by"),
       ParamSpec::number("s", 1.0, 0.0, std::numeric_limits<double>::infinity(),
                         "factor on the statistic", false, true),
       ParamSpec::choice("sign0", {"zero", "plus"}, "zero", "what sign(0) is"),
       ParamSpec::choice("granularity", {"tensor", "row"}, "tensor",
                         "one statistic per tensor or per row"),
       ParamSpec::integer("bits", 0, 0, 8,
                          "extra magnitude bits: 2^bits equal-count blocks, each its own scale")},
      &make_bitdelta};
}

}  // namespace deltaedit::edit::detail
