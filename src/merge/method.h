// The merge-method interface (MERGE.md §2). A method combines, for one output tensor, the tensors
// of N input models (and a base, for task-vector methods) into one output tensor. Methods never do
// I/O: the executor (src/engine) reads the inputs, casts them to the work dtype W, crops or skips
// mismatched shapes as the method's ShapeRule says, and writes what the method returns.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/param_schema.h"

namespace deltaedit::merge {

// `mergekit` reproduces mergekit's tensors; `paper` uses the papers' formulas (MERGE.md §0, §3).
enum class Conventions { Mergekit, Paper };

// W, the dtype the method computes in (MERGE.md §2.0). Values handed to a method are f32 holding
// values exactly representable in W; each step marked ⟦·⟧ in MERGE.md rounds to W (round_to_work).
enum class WorkType { F32, BF16, F16 };
float round_to_work(WorkType w, float x) noexcept;

// A declared parameter of a method: the schema shared with the edit ops (util/param_schema.h),
// which parsing, validation, --help and the dry-run plan read.
using ParamSpec = util::ParamSpec;

// How the executor reconciles input shapes that differ (MERGE.md §2.1, §2.3, §4.3).
enum class ShapeRule {
  CropEmbedToBaseSkipOthers,  // task-vector family: embed cropped to base, others skip the model
  CropEmbedToMin,             // linear, slerp, nuslerp, model_stock, karcher
  Error,                      // easy-define methods: any mismatch is an error
  Single,                     // passthrough: exactly one input
};

struct MethodInfo {
  std::string name;
  std::string summary;  // one line for --help and `deltaedit merge --methods`
  std::vector<ParamSpec> params;
  bool needs_base = false;                   // the base is handed as TensorJob::base
  bool optional_base = false;                // the base is used when given (nuslerp, multislerp)
  int min_models = 1, max_models = 1 << 20;  // non-base inputs
  bool random = false;                       // draws from the keyed RNG
  bool pointwise = false;  // out[i] depends on inputs at i only, for every parameter
                           // value (Method::pointwise says it for one job)
  ShapeRule shape_rule = ShapeRule::CropEmbedToBaseSkipOthers;
};

// One input tensor, already cast to W and cropped per the ShapeRule.
struct TensorInput {
  std::span<const float> values;
  std::map<std::string, double> params;  // per-model parameters evaluated for this tensor
  uint32_t model_index = 0;              // position in config order (keys the RNG)
  // Global magnitude trim (`trim: model`, MERGE.md §0/§3): the executor finds, over all of model
  // i's tensors, the magnitude threshold of its top-k% task-vector entries and hands it here. The
  // magnitude sparsifier (ties) then keeps exactly the entries with |τ| ≥ threshold (ties at the
  // threshold survive, as in the TIES reference code) instead of the per-tensor int(d·n) largest;
  // that makes the sparsifier pointwise. Unset: per-tensor trim. Ignored by other sparsifiers.
  std::optional<float> magnitude_threshold;
};

struct TensorJob {
  std::string_view name;           // output tensor name
  std::span<const int64_t> shape;  // row-major shape of every input and of the output
  WorkType work = WorkType::F32;
  bool is_embed = false;
  std::optional<TensorInput> base;       // set iff MethodInfo::needs_base
  std::vector<TensorInput> models;       // the other inputs, config order
  std::map<std::string, double> global;  // method-global parameters evaluated for this tensor
  Conventions conventions = Conventions::Mergekit;
  uint64_t seed = 0;
  // Per-model op chain (`deltaedit: {ops: [...]}`): task-vector methods call it on τ_i right after
  // forming it, before sparsifying; `model` is the position in `models` (not the config index).
  // Its result is rounded to W. Empty when no model has ops.
  std::function<void(size_t model, std::span<float> tau)> edit_task_vector;
  // Pointwise methods only: the job covers elements [first, first + out.size()) of the tensor.
  uint64_t first = 0;
  // The models' value spans are scratch copies the method may overwrite (the executor's decoded
  // buffers): task-vector methods then form τ_i in them instead of in buffers of their own.
  bool model_values_writable = false;
};

// A streamed job (Method::stream): a method whose output at element i depends on statistics of the
// whole tensor (magnitude rank cuts, L1 sums) or of its row (della's ranks) gathers them in read
// passes over the inputs, then writes the output block by block, holding O(block) values and the
// statistics instead of whole tensors. Blocks are TensorJobs over elements [first, first + size)
// (TensorJob::first), in index order, covering the tensor, each a multiple of quantum elements
// long except the last. For every such cut,
//   s = method.stream(job);                       // job: value spans empty
//   while (s->next_pass()) for each block k: s->observe(block_k);
//   for each block k: s->merge(block_k, out_k, warnings);
// writes the values and the warnings that merge() writes on the whole tensor (usage errors are
// thrown by stream(), or by merge() for the errors merge() throws on the whole tensor).
struct StreamPlan {
  uint64_t quantum = 1;      // blocks are multiples of this (della: whole rows)
  uint64_t state_bytes = 0;  // what the stream holds besides the blocks (histograms, row buffers)
};
class MethodStream {
 public:
  virtual ~MethodStream() = default;
  // Called before each read pass; false once the output pass may begin.
  virtual bool next_pass() = 0;
  virtual void observe(const TensorJob& block) = 0;
  virtual void merge(const TensorJob& block, std::span<float> out,
                     std::vector<std::string>& warnings) = 0;
};

class Method {
 public:
  virtual ~Method() = default;
  virtual const MethodInfo& info() const = 0;
  // Whether this job (its parameters and conventions; the value spans may be empty) may be run on
  // blocks of elements (TensorJob::first). E.g. dare_ties is pointwise with the paper rescale or
  // rescale: false, not with mergekit's L1 rescale (a whole-tensor sum).
  virtual bool pointwise(const TensorJob& job) const { return info().pointwise; }
  // Writes the merged tensor (values representable in W) into `out` (size = product of shape,
  // or the block size for pointwise jobs). Appends human-readable warnings (MERGE.md §5) naming the
  // tensor. Deterministic: depends only on the job. Throws deltaedit::Error for invalid inputs.
  virtual void merge(const TensorJob& job, std::span<float> out,
                     std::vector<std::string>& warnings) const = 0;
  // Whether this job (value spans may be empty) may run as a MethodStream, and its quantum and
  // state; nullopt when it needs the whole tensor.
  virtual std::optional<StreamPlan> stream_plan(const TensorJob& job) const { return std::nullopt; }
  // The stream of this job (value spans empty); only when stream_plan(job) is set.
  virtual std::unique_ptr<MethodStream> stream(const TensorJob& job) const { return nullptr; }
};

// Randomness (dare_*, della*): the draws for model i of output tensor N are the Philox stream
// util::rng_key(seed, N, model_index) at counter {element index, lane}, with lane = kMergeLane +
// purpose (below), so they never coincide with the edit ops' lanes (0) of the same key. A keep
// draw is uniform(index, lane) < p (53 bits), counted by flat element index: a block gives the
// same draws as the whole tensor.
inline constexpr uint32_t kMergeLane = 0x4D470000u;  // "MG"
enum class RandomPurpose : uint32_t { DareKeep = 1, DellaKeep = 2 };

// The registry: one line per method (registry.cpp). nullptr if unknown.
const Method* find_method(std::string_view name);
std::vector<const Method*> all_methods();

}  // namespace deltaedit::merge
