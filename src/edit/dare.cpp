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
#include "util/clones.h"
#include "util/reduce.h"

namespace deltaedit::edit::detail {
namespace {

// dropped[j] = a[j] where m[j] != 0, else 0; kept[j] the other way (vector clones).
DELTAEDIT_CLONES void split_by_mask(const float* __restrict a, const uint32_t* __restrict m,
                                    float* __restrict dropped, float* __restrict kept, size_t n) {
  for (size_t j = 0; j < n; ++j) {
    dropped[j] = m[j] != 0 ? a[j] : 0.0f;
    kept[j] = m[j] != 0 ? 0.0f : a[j];
  }
}

// Δ'_i = kf·Δ_i where selected, cf·Δ_i elsewhere.
void scale_selected(std::span<float> piece, uint64_t first, const TensorContext& ctx, double p,
                    float kf, float cf) {
  for_each_selection(rng_for(ctx), piece.size(), p, first,
                     [piece, kf, cf](size_t off, const uint32_t* m, size_t count) {
                       // kf and cf by value: stores to d cannot change them, so this vectorises.
                       float* d = piece.data() + off;
                       for (size_t j = 0; j < count; ++j) d[j] *= m[j] != 0 ? kf : cf;
                     });
}

nlohmann::json dare_params(double p, double k, bool l1) {
  return {{"p", p}, {"k", k}, {"rescale", l1 ? "l1" : "paper"}};
}

// rescale=paper: pointwise.
class DareOp final : public PointwiseOp {
 public:
  DareOp(double p, double k) : PointwiseOp("dare"), p_(p), k_(k) {}
  nlohmann::json own_params() const override { return dare_params(p_, k_, false); }
  void apply_block(std::span<float> piece, uint64_t first,
                   const TensorContext& ctx) const override {
    if (p_ == 0.0) return;  // identity
    scale_selected(piece, first, ctx, p_, static_cast<float>(k_),
                   static_cast<float>((1.0 - k_ * p_) / (1.0 - p_)));
  }

 private:
  double p_, k_;
};

// rescale=l1: the observe pass draws the mask and sums the selected and the kept L1 mass; the
// apply pass scales by the same mask. It keeps the mask as bits when they take at most
// kKeptMaskEntries/8 bytes (8 MiB: every matrix of an 8B Llama but its embeddings), and draws it
// again for a larger tensor, so memory stays bounded whatever the model size.
inline constexpr uint64_t kKeptMaskEntries = uint64_t(1) << 26;

// bits[w] = the 64 masks m[64w .. 64w + 63] (each 0 or ~0), bit b for m[64w + b].
DELTAEDIT_CLONES void pack_mask(const uint32_t* __restrict m, size_t words,
                                uint64_t* __restrict bits) {
  for (size_t w = 0; w < words; ++w) {
    uint64_t x = 0;
    for (size_t b = 0; b < 64; ++b) x |= uint64_t(m[64 * w + b] & 1u) << b;
    bits[w] = x;
  }
}

// d[j] *= kf where bit j of bits is set, cf elsewhere, for 64·words entries.
DELTAEDIT_CLONES void scale_by_bits(float* __restrict d, const uint64_t* __restrict bits,
                                    size_t words, float kf, float cf) {
  for (size_t w = 0; w < words; ++w) {
    const uint64_t x = bits[w];
    for (size_t b = 0; b < 64; ++b) d[64 * w + b] *= ((x >> b) & 1u) != 0 ? kf : cf;
  }
}

struct DareL1State {
  explicit DareL1State(util::KeyedRng r) : rng(r) {}
  util::KeyedRng rng;              // the tensor's stream (observe has no context)
  util::BlockedSum dropped, kept;  // Σ|Δ| over the finite selected / unselected entries
  float cf = 1.0f;
  std::vector<uint64_t> mask;  // bit i: entry i selected (empty: drawn again when applied)
  bool selected(uint64_t i) const { return ((mask[i >> 6] >> (i & 63)) & 1u) != 0; }
};

class DareL1Op final : public ObservingOpOf<DareL1State> {
 public:
  DareL1Op(double p, double k) : ObservingOpOf("dare"), p_(p), k_(k) {}
  nlohmann::json own_params() const override { return dare_params(p_, k_, true); }
  uint64_t workspace_bytes(std::span<const int64_t> shape) const override {
    const uint64_t n = static_cast<uint64_t>(shape_elements(shape));
    return keeps_mask(n) ? (n + 63) / 64 * 8 : 0;
  }

 protected:
  DareL1State begin(const TensorContext& ctx) const override {
    DareL1State st(rng_for(ctx));
    const uint64_t n = static_cast<uint64_t>(shape_elements(ctx.shape));
    if (keeps_mask(n)) st.mask.assign(static_cast<size_t>((n + 63) / 64), 0);
    return st;
  }
  void observe_piece(DareL1State& st, std::span<const float> piece, uint64_t first) const override {
    if (p_ == 0.0) return;
    for_each_selection(st.rng, piece.size(), p_, first,
                       [&](size_t off, const uint32_t* m, size_t count) {
                         float a[kSelectionBlock], dropped[kSelectionBlock], kept[kSelectionBlock];
                         util::finite_abs_f32(piece.data() + off, a, count);
                         split_by_mask(a, m, dropped, kept, count);
                         st.dropped.add_f32(std::span<const float>(dropped, count));
                         st.kept.add_f32(std::span<const float>(kept, count));
                         if (!st.mask.empty()) keep_bits(st, first + off, m, count);
                       });
  }
  void end(DareL1State& st) const override {
    const double dropped = st.dropped.sum(), kept = st.kept.sum();
    // With no kept mass the kept entries are all zero and their multiplier is irrelevant.
    st.cf = static_cast<float>(kept > 0.0 ? (dropped + kept - k_ * dropped) / kept : 1.0);
  }
  void apply_piece(const DareL1State& st, std::span<float> piece, uint64_t first,
                   const TensorContext& ctx) const override {
    if (p_ == 0.0) return;
    const float kf = static_cast<float>(k_);
    if (st.mask.empty()) return scale_selected(piece, first, ctx, p_, kf, st.cf);
    // Whole words of the mask at once, single entries where the piece starts or ends inside one.
    size_t j = 0;
    const size_t n = piece.size();
    for (; j < n && (first + j) % 64 != 0; ++j) piece[j] *= st.selected(first + j) ? kf : st.cf;
    const size_t words = (n - j) / 64;
    scale_by_bits(piece.data() + j, st.mask.data() + (first + j) / 64, words, kf, st.cf);
    for (j += 64 * words; j < n; ++j) piece[j] *= st.selected(first + j) ? kf : st.cf;
  }

 private:
  bool keeps_mask(uint64_t n) const { return p_ != 0.0 && n <= kKeptMaskEntries; }
  // Sets the bits of the selected entries among [at, at + count) (each entry is observed once).
  static void keep_bits(DareL1State& st, uint64_t at, const uint32_t* m, size_t count) {
    size_t j = 0;
    const auto one = [&](size_t q) {
      if (m[q] != 0) st.mask[(at + q) >> 6] |= uint64_t(1) << ((at + q) & 63);
    };
    for (; j < count && (at + j) % 64 != 0; ++j) one(j);
    const size_t words = (count - j) / 64;
    pack_mask(m + j, words, st.mask.data() + (at + j) / 64);
    for (j += 64 * words; j < count; ++j) one(j);
  }
  double p_, k_;
};

class DropOp final : public PointwiseOp {
 public:
  explicit DropOp(double p) : PointwiseOp("drop"), p_(p) {}
  nlohmann::json own_params() const override { return {{"p", p_}}; }
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
// x_i ← k·x_i where selected(i), c·x_i elsewhere, for count selected among n in the tensor
// (selected(i) is read before x_i changes).
template <class Selected>
void biased_rescale(std::span<float> x, uint64_t count, uint64_t n, double k, Selected&& selected) {
  if (count == 0) return;
  const float kf = static_cast<float>(k);
  if (count == n) {
    for (float& d : x) d *= kf;
    return;
  }
  const double p = static_cast<double>(count) / static_cast<double>(n);
  const float cf = static_cast<float>((1.0 - k * p) / (1.0 - p));
  for (size_t i = 0; i < x.size(); ++i) x[i] *= selected(i) ? kf : cf;
}

// by=delta: count the selected entries (Δ<0) in the observe pass, then scale each by its own sign.
struct BiasedState {
  uint64_t count = 0, n = 0;
};

class BiasedDeltaOp final : public ObservingOpOf<BiasedState> {
 public:
  explicit BiasedDeltaOp(double k) : ObservingOpOf("biased"), k_(k) {}
  nlohmann::json own_params() const override { return {{"by", "delta"}, {"k", k_}}; }

 protected:
  BiasedState begin(const TensorContext&) const override { return {}; }
  void observe_piece(BiasedState& st, std::span<const float> piece, uint64_t) const override {
    for (float d : piece) st.count += d < 0.0f ? 1 : 0;
    st.n += piece.size();
  }
  void apply_piece(const BiasedState& st, std::span<float> piece, uint64_t,
                   const TensorContext&) const override {
    biased_rescale(piece, st.count, st.n, k_, [&](size_t i) { return piece[i] < 0.0f; });
  }

 private:
  double k_;
};

// by=grad: the mask needs the gradient of the same tensor, handed whole.
class BiasedGradOp final : public WholeTensorOp {
 public:
  explicit BiasedGradOp(double k) : WholeTensorOp("biased"), k_(k) {}
  nlohmann::json own_params() const override { return {{"by", "grad"}, {"k", k_}}; }
  bool needs_grad() const override { return true; }
  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
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
    biased_rescale(delta, count, delta.size(), k_, selected);
    return {};
  }

 private:
  double k_;
};

std::unique_ptr<Op> make_dare(const ParamReader& r) {
  if (r.choice("rescale") == "l1") return std::make_unique<DareL1Op>(r.real("p"), r.real("k"));
  return std::make_unique<DareOp>(r.real("p"), r.real("k"));
}
std::unique_ptr<Op> make_drop(const ParamReader& r) {
  return std::make_unique<DropOp>(r.real("p"));
}
std::unique_ptr<Op> make_biased(const ParamReader& r) {
  if (r.choice("by") == "grad") return std::make_unique<BiasedGradOp>(r.real("k"));
  return std::make_unique<BiasedDeltaOp>(r.real("k"));
}

}  // namespace

constexpr double kInf = std::numeric_limits<double>::infinity();

OpDecl dare_decl() {
  return {
      "dare",
      "random drop with rescale: Δ' = k·M⊙Δ + (1−k·p)/(1−p)·(1−M)⊙Δ, M~Bernoulli(p)",
      {ParamSpec::number("p", 0.9, 0.0, 1.0, "drop probability", false, true),
       ParamSpec::number("k", 0.0, -kInf, kInf, "factor kept on dropped entries (0: drop them)"),
       ParamSpec::choice("rescale", {"paper", "l1"}, "paper",
                         "paper: kept entries ×(1−k·p)/(1−p); l1: kept entries rescaled to the "
                         "tensor's L1 norm")},
      &make_dare};
}

OpDecl drop_decl() {
  return {"drop",
          "random drop without rescale: Δ' = (1−M)⊙Δ, M~Bernoulli(p)",
          {ParamSpec::number("p", 0.9, 0.0, 1.0, "drop probability")},
          &make_drop};
}

OpDecl biased_decl() {
  return {"biased",
          "dare with a chosen mask: M=[Δ<0] (by=delta) or M=[Δ·G<0] (by=grad)",
          {ParamSpec::choice("by", {"delta", "grad"}, "delta",
                             "the mask: negative Δ, or Δ against the gradient (needs --grad)"),
           ParamSpec::number("k", 0.5, -kInf, kInf, "factor kept on masked entries")},
          &make_biased};
}

}  // namespace deltaedit::edit::detail
