// Shared pieces of the merge methods: the base class holding a MethodInfo, parameter lookup,
// rounding to the work dtype, fixed-order reductions, the keyed draws and the rank masks.
//
// Numerics (the `mergekit` convention, MERGE.md §2.0): values are f32 holding values of W. An
// elementwise step ⟦a op b⟧ is computed in f32 and rounded to W (Round). Sums over the models of
// one element are accumulated in f32 in config order and rounded once. Sums over the elements of a
// tensor (L1 norms, dot products, norms) are accumulated in f64 in util::ordered_sum's fixed block
// order, then rounded to f32 and to W (torch accumulates in f32 by a cascade whose order we do not
// reproduce; the f64 total rounded to f32 is at least as close to the exact sum).
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/convert.h"
#include "merge/method.h"
#include "util/error.h"
#include "util/philox.h"
#include "util/rank_select.h"
#include "util/reduce.h"

namespace deltaedit::merge::detail {

struct Round {
  WorkType w;
  float operator()(float x) const noexcept {
    if (w == WorkType::F32) return x;
    if (w == WorkType::BF16) return io::bf16_to_f32(io::f32_to_bf16(x));  // inline: the hot case
    return round_to_work(w, x);
  }
};

// Round{WorkType::BF16} without branches, so that element loops using it vectorise: the same
// values as io::bf16_to_f32(io::f32_to_bf16(x)) (nearest even; NaN → quiet NaN, sign kept).
struct RoundBf16 {
  float operator()(float x) const noexcept {
    const uint32_t b = std::bit_cast<uint32_t>(x);
    const uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) & 0xFFFF0000u;
    const uint32_t nan = (b & 0x80000000u) | 0x7FC00000u;
    return std::bit_cast<float>((b & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
  }
};
struct RoundF32 {
  float operator()(float x) const noexcept { return x; }
};

// x where mask is all ones, +0 where it is zero; x where keep is 1, +0 where it is 0. Branch-free,
// so the element loops that select with them vectorise.
inline float masked(float x, uint32_t mask) noexcept {
  return std::bit_cast<float>(std::bit_cast<uint32_t>(x) & mask);
}
inline float kept_or_zero(float x, uint8_t keep) noexcept { return masked(x, 0u - uint32_t{keep}); }

// Calls f(rr) with the rounding of `w` as a functor type the compiler can inline (RoundBf16,
// RoundF32, or Round for f16). Always inlined, so that in a function with vector clones
// (util/clones.h) an f marked DELTAEDIT_INLINE is compiled into each clone.
template <class F>
[[gnu::always_inline]] inline decltype(auto) with_rounding(WorkType w, F&& f) {
  if (w == WorkType::BF16) return f(RoundBf16{});
  if (w == WorkType::F32) return f(RoundF32{});
  return f(Round{w});
}

// Σ term(i) over i < n in the fixed f64 order, rounded to f32 and then to W.
template <class Term>
float tensor_sum(WorkType w, size_t n, Term&& term) {
  return Round{w}(static_cast<float>(util::ordered_sum(n, term)));
}

uint64_t numel(std::span<const int64_t> shape);

// "model #i" (config order), for messages.
std::string model_label(const TensorInput& in);
std::string format_number(double v);

class MethodBase : public Method {
 public:
  explicit MethodBase(MethodInfo info) : info_(std::move(info)) {}
  const MethodInfo& info() const override { return info_; }

 protected:
  // A method-global parameter: the job's value, else the declared default; throws Usage
  // ("Missing required parameter") when neither exists.
  double global(const TensorJob& job, std::string_view name) const;
  // A per-model parameter of `in`: its value, else the declared default, else Usage.
  double per_model(const TensorJob& job, const TensorInput& in, std::string_view name) const;
  // The value if given or defaulted, else nothing (optional parameters such as `scale`).
  std::optional<double> per_model_opt(const TensorInput& in, std::string_view name) const;
  [[noreturn]] void usage(const TensorJob& job, const std::string& msg) const;
  std::string prefix(const TensorJob& job) const;  // "merge_method NAME, tensor 'T': "
  // Throws unless every input span has `n` values.
  void check_sizes(const TensorJob& job, size_t n) const;

  MethodInfo info_;
};

const ParamSpec* find_param(const MethodInfo& info, std::string_view name);

// The Philox key of model `in` for this output tensor (method.h: Randomness).
inline util::PhiloxKey merge_key(const TensorJob& job, const TensorInput& in) {
  return util::rng_key(job.seed, job.name, in.model_index);
}
inline uint32_t purpose_lane(RandomPurpose p) { return kMergeLane + static_cast<uint32_t>(p); }

// keep[j] = uniform(first + j, lane) < p for j < n (53-bit comparison, as edit::drawn).
void draw_keep(util::PhiloxKey key, RandomPurpose purpose, uint64_t first, size_t n, double p,
               uint8_t* keep);
// One draw with its own probability: uniform(index, lane) < p.
bool keep_one(util::PhiloxKey key, RandomPurpose purpose, uint64_t index, double p);

// Orderable key of |x|: larger |x| gives a larger key; NaN is above +Inf (torch sorts NaN last
// in ascending order).
inline uint32_t abs_key(float x) noexcept {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b & 0x7FFFFFFFu;
}

// The key at ascending rank r (0-based) of key(i), i < n, and how many keys are below it (and
// equal to it): radix selection by 16-bit histogram passes (util::RankSelect, the selection the
// streamed methods run block by block), without copying or reordering the keys.
using util::RankCut;
template <class Key>
RankCut key_at_rank(uint64_t n, uint64_t r, const Key& key) {
  const auto run = [&](auto select) {
    while (select.next_pass()) select.add(n, key);
    return select.cut(0);
  };
  if (n <= util::RankSelect::kMaxKeys) return run(util::RankSelect(n, {r}));
  return run(util::RankSelect64(n, {r}));
}

// Calls keep(i, kept) for i = 0..n−1 in order, kept = whether element i's rank in the stable
// ascending order of key (equal keys ordered by index) lies in [lo, hi). O(n), no copy of the keys.
template <class Key, class Keep>
void for_rank_range(uint64_t n, uint64_t lo, uint64_t hi, const Key& key, Keep&& keep) {
  hi = std::min(hi, n);
  if (lo >= hi) {
    for (uint64_t i = 0; i < n; ++i) keep(i, false);
    return;
  }
  const bool cut_lo = lo > 0, cut_hi = hi < n;
  const RankCut a = cut_lo ? key_at_rank(n, lo, key) : RankCut{};
  const RankCut b = cut_hi ? key_at_rank(n, hi - 1, key) : RankCut{};
  uint64_t eq_lo = 0, eq_hi = 0;
  for (uint64_t i = 0; i < n; ++i) {
    // Branch-free (the comparisons follow the data): equal keys take consecutive ranks.
    const uint32_t k = key(i);
    const bool eq_a = k == a.value, eq_b = k == b.value;
    const bool ok_lo = !cut_lo || (k > a.value || (eq_a && a.below + eq_lo >= lo));
    const bool ok_hi = !cut_hi || (k < b.value || (eq_b && b.below + eq_hi < hi));
    eq_lo += eq_a ? 1 : 0;
    eq_hi += eq_b ? 1 : 0;
    keep(i, ok_lo && ok_hi);
  }
}

// keep[i] = 1 iff element i's rank in the stable ascending order of `keys` (equal keys ordered by
// index) lies in [lo, hi); others 0. O(n).
void keep_rank_range(std::span<const uint32_t> keys, uint64_t lo, uint64_t hi,
                     std::span<uint8_t> keep);

// The method families (one file each); the registry lists them.
// task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della,
// della_linear.
std::unique_ptr<Method> make_task_arithmetic(std::string_view name);
std::unique_ptr<Method> make_linear();
std::unique_ptr<Method> make_slerp();
std::unique_ptr<Method> make_nuslerp();
std::unique_ptr<Method> make_model_stock();
std::unique_ptr<Method> make_passthrough();
std::unique_ptr<Method> make_sce();
std::unique_ptr<Method> make_karcher();
std::unique_ptr<Method> make_multislerp();
std::unique_ptr<Method> make_nearswap();
std::unique_ptr<Method> make_ram();
std::unique_ptr<Method> make_ramplus_tl();

}  // namespace deltaedit::merge::detail
