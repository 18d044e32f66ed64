// The sparsifiers of the task-vector family (MERGE.md §2.2), applied to one model's unweighted
// task vector τ of one tensor, in place.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "merge/method.h"
#include "util/philox.h"

namespace deltaedit::merge::detail {

enum class Sparsifier { None, Magnitude, Random, MagnitudeOutliers, DellaMagprune };

struct SparsifyArgs {
  Sparsifier kind = Sparsifier::None;
  double density = 1.0, gamma = 0.01, epsilon = 0.15;
  bool rescale = false;
  Conventions conventions = Conventions::Mergekit;
  WorkType work = WorkType::F32;
  std::span<const int64_t> shape;  // the whole tensor's shape
  std::string_view tensor;         // output tensor name (messages)
  std::string model;               // "model #i" (messages)
  util::PhiloxKey key{};           // merge_key of this model
  uint64_t first = 0;              // pointwise blocks: index of tau[0] in the tensor
  std::optional<float> threshold;  // global magnitude trim (method.h)
};

// Whether sparsify(args) is pointwise (may run on a block with args.first set).
bool sparsify_pointwise(const SparsifyArgs& a);

// τ ← sparsify(τ) per MERGE.md §2.2 and the conventions of §3:
// - magnitude: keep the int(d·n) largest |τ| (ties: lower flat index); k = 0 is a Usage error
//   in the mergekit convention and zeroes τ (with a warning) in the paper convention; with a
//   threshold, keep |τ| ≥ threshold.
// - random: keep ~ Bernoulli(d) (d rounded to bf16 when W is bf16, as mergekit draws in W).
// - magnitude_outliers: keep the stable ascending ranks [bot, n − top); mergekit zeroes all of τ
//   when top = int(γ·n) = 0 (warning); the paper convention keeps [bot, n) then.
// - della_magprune: per row (dim 1; a 1-D tensor is one row), ranks r = 1..m by ascending |τ|
//   (stable; in W, so bf16 rounds ranks above 256), q = clamp((d−ε) + 2ε(r−1)/(m−1), 0, 1) rounded
//   to W, keep ~ Bernoulli(q). Rows of length 1 (mergekit: NaN) take q = d, with a warning.
// Rescale: mergekit's L1 ratio ⟦τ⊙mask·⟦B/A⟧⟧ (B = ⟦Σ|τ|⟧, A = ⟦Σ|τ⊙mask|⟧, none if either is
// below 1e-7). Paper convention: random divides survivors by d, della by their q (both in f64,
// rounded once to W); magnitude sparsifiers use the L1 ratio.
void sparsify(std::span<float> tau, const SparsifyArgs& a, std::vector<std::string>& warnings);

// sparsify() on a streamed τ (MethodStream): read passes gather what the sparsifier needs of the
// whole tensor — the rank cuts of magnitude and magnitude_outliers (RankSelect), the L1 sums of
// the rescale in util::ordered_sum's order — and apply() then sparsifies each block exactly as
// sparsify() does the whole τ. Della ranks whole rows, so its blocks are multiples of the row
// group (quantum). Protocol: while (next_pass()) observe(block) for the blocks in index order (or
// none when !observing()); then apply(block) for the blocks in index order.
class SparsifyStream {
 public:
  // Whether `a` (on a tensor of n = numel(a.shape) elements) streams; the quantum and the bytes
  // held (besides the blocks).
  static bool supported(const SparsifyArgs& a);
  static uint64_t quantum(const SparsifyArgs& a);
  static uint64_t state_bytes(const SparsifyArgs& a);

  // Throws the usage errors sparsify() throws for `a`; appends the warnings it appends.
  SparsifyStream(const SparsifyArgs& a, std::vector<std::string>& warnings);
  ~SparsifyStream();
  SparsifyStream(const SparsifyStream&) = delete;
  SparsifyStream& operator=(const SparsifyStream&) = delete;

  bool next_pass();
  bool observing() const;  // whether the pass in progress reads τ
  void observe(std::span<const float> tau, uint64_t first);
  // observe(τ) for τ = ⟦x − b⟧, without τ in memory, when the pass in progress reads only keys
  // (a rank selection); false, observing nothing, otherwise (then call observe).
  bool observe_task_vector(std::span<const float> x, std::span<const float> b, uint64_t first);
  void apply(std::span<float> tau, uint64_t first);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace deltaedit::merge::detail
