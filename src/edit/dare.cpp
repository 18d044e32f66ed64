// dare: Δ' = k·M⊙Δ + (1−k·p)/(1−p)·(1−M)⊙Δ, M~Bernoulli(p); drop: Δ' = (1−M)⊙Δ; biased: dare's formula with a chosen M.
//
// Masks: element i is selected (M=1) iff uniform(i) < p, drawn from the keyed Philox stream
// (computed kPhiloxBatch counters at a time, the same values as one at a time), so
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

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DELTAEDIT_AVX2_KERNELS 1
#include <immintrin.h>
#else
#define DELTAEDIT_AVX2_KERNELS 0
#endif

namespace deltaedit::edit::detail {
namespace {

// mask[j] = drawn(rng, first + j, p) for j < n, with threshold = KeyedRng::uniform_threshold(p):
// the same stream and the same comparison, kPhiloxBatch counters at a time.
void draw_mask_generic(util::PhiloxKey key, uint64_t first, size_t n, uint64_t threshold, uint8_t* mask) {
  for (size_t i = 0; i < n; i += util::kPhiloxBatch) {
    uint32_t w0[util::kPhiloxBatch], w1[util::kPhiloxBatch];
    util::philox4x32_10_w01(key, first + i, 0, w0, w1);
    const size_t take = std::min(util::kPhiloxBatch, n - i);
    for (size_t j = 0; j < take; ++j) mask[i + j] = util::KeyedRng::uniform_bits(w0[j], w1[j]) < threshold ? 1 : 0;
  }
}

#if DELTAEDIT_AVX2_KERNELS
// Philox4x32-10 on eight counters in the eight 32-bit lanes of AVX2 registers: the 32×32→64
// products of the even lanes and of the odd lanes (shifted down) are split back into high and low
// words lane by lane. Integer arithmetic only: the same words as the scalar generator.
__attribute__((target("avx2"))) void draw_mask_avx2(util::PhiloxKey key, uint64_t first, size_t n,
                                                    uint64_t threshold, uint8_t* mask) {
  static_assert(util::kPhiloxBatch == 8);
  const __m256i m0 = _mm256_set1_epi64x(0xD2511F53u), m1 = _mm256_set1_epi64x(0xCD9E8D57u);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const auto split = [](__m256i even, __m256i odd, __m256i& hi, __m256i& lo) __attribute__((target("avx2"))) {
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  };
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t f = first + i;
    const size_t take = std::min<size_t>(8, n - i);
    if (static_cast<uint32_t>(f) > 0xFFFFFFFFu - 7u) {  // the high counter word changes inside the batch
      draw_mask_generic(key, f, take, threshold, mask + i);
      continue;
    }
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(f))), lanes);
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(f >> 32)));
    __m256i c2 = _mm256_setzero_si256(), c3 = _mm256_setzero_si256();
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
      if (round > 0) {
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
      }
      __m256i hi0, lo0, hi1, lo1;
      split(_mm256_mul_epu32(c0, m0), _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0), hi0, lo0);
      split(_mm256_mul_epu32(c2, m1), _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1), hi1, lo1);
      const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c0 = n0;
      c1 = lo1;
      c2 = n2;
      c3 = lo0;
    }
    alignas(32) uint32_t w0[8], w1[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(w0), c0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(w1), c1);
    for (size_t j = 0; j < take; ++j) mask[i + j] = util::KeyedRng::uniform_bits(w0[j], w1[j]) < threshold ? 1 : 0;
  }
}

const bool kHaveAvx2 = __builtin_cpu_supports("avx2");
#endif

void draw_mask(util::PhiloxKey key, uint64_t first, size_t n, uint64_t threshold, uint8_t* mask) {
#if DELTAEDIT_AVX2_KERNELS
  if (kHaveAvx2) return draw_mask_avx2(key, first, n, threshold, mask);
#endif
  draw_mask_generic(key, first, n, threshold, mask);
}

// Calls fn(offset, mask, count) over [0, n) in blocks, mask[j] = drawn(rng, first + offset + j, p):
// the draws of elements [first, first + n) of the tensor.
template <class Fn>
void for_each_mask_block(const util::KeyedRng& rng, size_t n, double p, Fn&& fn, uint64_t first = 0) {
  constexpr size_t kBlock = 4096;
  uint8_t mask[kBlock];
  const uint64_t threshold = util::KeyedRng::uniform_threshold(p);
  for (size_t off = 0; off < n; off += kBlock) {
    const size_t m = std::min(kBlock, n - off);
    draw_mask(rng.key(), first + off, m, threshold, mask);
    fn(off, mask, m);
  }
}

class DareOp final : public OpBase {
 public:
  DareOp(double p, double k, bool l1) : OpBase("dare"), p_(p), k_(k), l1_(l1) {}
  nlohmann::json own_params() const override {
    return {{"p", p_}, {"k", k_}, {"rescale", l1_ ? "l1" : "paper"}};
  }
  bool uses_rng() const override { return true; }
  uint64_t workspace_bytes(std::span<const int64_t> shape) const override {
    return l1_ ? static_cast<uint64_t>(shape_elements(shape)) : 0;
  }

  // rescale=paper is pointwise; rescale=l1 needs the tensor's selected L1 mass first.
  bool pointwise() const override { return !l1_; }
  void apply_block(std::span<float> piece, uint64_t first, const TensorContext& ctx) const override {
    if (l1_) OpBase::apply_block(piece, first, ctx);  // not pointwise: throws
    if (p_ == 0.0) return;                            // identity
    const float kf = static_cast<float>(k_);
    const float cf = static_cast<float>((1.0 - k_ * p_) / (1.0 - p_));
    for_each_mask_block(
        rng_for(ctx), piece.size(), p_,
        [&](size_t off, const uint8_t* m, size_t count) {
          float* d = piece.data() + off;
          for (size_t j = 0; j < count; ++j) d[j] *= m[j] != 0 ? kf : cf;
        },
        first);
  }
  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    if (p_ == 0.0) return {};               // identity
    if (!l1_) return Op::apply(delta, ctx);  // pointwise
    const util::KeyedRng rng = rng_for(ctx);
    const float kf = static_cast<float>(k_);
    std::vector<uint8_t> mask(delta.size());
    for_each_mask_block(rng, delta.size(), p_, [&](size_t off, const uint8_t* m, size_t count) {
      std::copy(m, m + count, mask.begin() + static_cast<std::ptrdiff_t>(off));
    });
    const auto mass = [&](bool selected) {
      return util::ordered_sum(delta.size(), [&](size_t i) {
        return (mask[i] != 0) == selected && std::isfinite(delta[i]) ? std::fabs(static_cast<double>(delta[i]))
                                                                    : 0.0;
      });
    };
    const double dropped = mass(true), kept = mass(false);
    // With no kept mass the kept entries are all zero and their multiplier is irrelevant.
    const double c = kept > 0.0 ? (dropped + kept - k_ * dropped) / kept : 1.0;
    const float cf = static_cast<float>(c);
    for (size_t i = 0; i < delta.size(); ++i) delta[i] *= mask[i] != 0 ? kf : cf;
    return {};
  }

 private:
  double p_, k_;
  bool l1_;
};

class DropOp final : public OpBase {
 public:
  explicit DropOp(double p) : OpBase("drop"), p_(p) {}
  nlohmann::json own_params() const override { return {{"p", p_}}; }
  bool uses_rng() const override { return true; }
  bool pointwise() const override { return true; }
  void apply_block(std::span<float> piece, uint64_t first, const TensorContext& ctx) const override {
    if (p_ == 0.0) return;
    for_each_mask_block(
        rng_for(ctx), piece.size(), p_,
        [&](size_t off, const uint8_t* m, size_t count) {
          float* d = piece.data() + off;
          for (size_t j = 0; j < count; ++j) d[j] = m[j] != 0 ? 0.0f : d[j];
        },
        first);
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
  nlohmann::json own_params() const override { return {{"by", by_grad_ ? "grad" : "delta"}, {"k", k_}}; }
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
  void apply_observed(const Op::State& s, std::span<float> piece, uint64_t, const TensorContext&) const override {
    const auto& st = dynamic_cast<const State&>(s);
    rescale(piece, st.count, st.n, [&](size_t i) { return piece[i] < 0.0f; });
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    if (!by_grad_) return Op::apply(delta, ctx);  // two-pass
    if (ctx.grad.size() != delta.size()) {
      throw Error(ErrorKind::Usage,
                  "op 'biased': by=grad needs the gradient of this tensor (" + std::to_string(delta.size()) +
                      " values), got " + std::to_string(ctx.grad.size()),
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
