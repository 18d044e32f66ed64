// The edit-operation interface. An op turns the running delta Δ (f32, one tensor) into Δ' in place.
// Ops never do I/O; the engine streams tensors through them. See SPEC.md §2–§3.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "linalg/lowrank.h"
#include "util/param_schema.h"

namespace deltaedit::edit {

// "name:key=value,key=value" as written on the command line.
struct OpSpec {
  std::string name;
  std::vector<std::pair<std::string, std::string>> params;  // in written order
  std::string text;                                         // the original spec
};
// Throws deltaedit::Error(Usage) on malformed syntax (empty name, missing '=', duplicate key).
// A comma separates parameters only where a `key=` follows it, so values may hold commas
// (e.g. include=layers\.\d{1,2}\.mlp).
OpSpec parse_op_spec(std::string_view text);

// Tensor-name filters every op accepts besides its own keys: include=REGEX, exclude=REGEX
// (PCRE2 syntax, unanchored search in the full tensor name; empty = no filter). make_op checks
// that they compile; the engine applies them: the op edits a tensor iff include is empty or
// matches, and exclude is empty or does not match. Op::params() records them when given.
struct NameFilter {
  std::string include, exclude;
};
NameFilter name_filter(const OpSpec& spec);

// Low-rank factors live in linalg (packs use them too).
using linalg::LowRankFactors;
using linalg::reconstruct_lowrank;

// Everything an op may need to know about the tensor it edits.
struct TensorContext {
  std::string_view name;
  std::span<const int64_t> shape;  // row-major; rows = shape[0], cols = product of the rest
  uint64_t seed = 0;               // the run's seed
  uint32_t op_index = 0;           // position of this op in the --op sequence
  std::span<const float> grad;     // ∇L(W_post) for this tensor (empty unless needs_grad())
};

// What an op leaves besides the edited values.
struct OpOutcome {
  // Set by ops whose result is exactly reconstructible from factors (lowrank); the engine
  // stores them in packs. The values written to `delta` must equal reconstruct_lowrank(factors).
  std::optional<LowRankFactors> factors;
  bool touched = true;  // false when the op skipped this tensor (e.g. lowrank on a 1-D tensor)
};

// How the engine runs an op. Each kind is its own base class below, so an op offers exactly the
// entry points of its kind: calling apply_block on an op that is not pointwise does not compile.
enum class ExecKind {
  Pointwise,    // Δ'_i depends on (Δ_i, i, ctx) only: streamed block by block
  Observing,    // one or more observe passes over the tensor in order, then a pointwise pass
  WholeTensor,  // needs the whole tensor at once (SVD, sort, permutation)
};

class Op {
 public:
  virtual ~Op() = default;
  Op(const Op&) = delete;
  Op& operator=(const Op&) = delete;

  std::string_view name() const { return name_; }
  // The canonical, fully-defaulted parameters (recorded in metadata and deltaedit.json), with
  // include/exclude when given.
  nlohmann::json params() const;
  const NameFilter& filter() const { return filter_; }
  void set_filter(NameFilter f) { filter_ = std::move(f); }

  virtual ExecKind kind() const = 0;
  bool pointwise() const { return kind() == ExecKind::Pointwise; }
  bool observes() const { return kind() == ExecKind::Observing; }
  virtual bool needs_grad() const { return false; }
  // Whether this op edits a tensor of this shape at all (lowrank: 2-D only).
  virtual bool applies_to(std::span<const int64_t> shape) const { return true; }
  // Upper bound of extra bytes of workspace for a tensor of this shape (SVD, sort buffers).
  virtual uint64_t workspace_bytes(std::span<const int64_t> shape) const { return 0; }
  // Edit the whole tensor Δ in place. Deterministic: depends only on (delta, ctx), never on
  // threads or globals. Every kind has this form; streamed forms give the same bytes.
  virtual OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const = 0;

 protected:
  explicit Op(std::string name) : name_(std::move(name)) {}
  virtual nlohmann::json own_params() const = 0;

 private:
  std::string name_;
  NameFilter filter_;
};

// Pointwise ops: the engine streams the tensor through apply_block in pieces without holding it
// whole. apply_block(piece, first, ctx) edits the elements [first, first + piece.size())
// exactly as apply() on the whole tensor would.
class PointwiseOp : public Op {
 public:
  ExecKind kind() const final { return ExecKind::Pointwise; }
  virtual void apply_block(std::span<float> piece, uint64_t first,
                           const TensorContext& ctx) const = 0;
  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const final {
    apply_block(delta, 0, ctx);
    return {};
  }

 protected:
  using Op::Op;
};

// Observing ops (bitdelta's scale, dare rescale=l1, magnitude's threshold select): the tensor is
// observed in one or more complete passes, each in index order; after every pass observe_again
// says whether one more is needed; then every piece is edited pointwise with what was observed.
// For any cut into pieces,
//   s = observe_begin(ctx);
//   do { observe(*s, piece_k, first_k) for k in order } while (observe_again(*s));
//   observe_end(*s); apply_observed(*s, piece_k, first_k, ctx) for each k
// gives the bytes of apply() on the whole tensor. Ops implement it through ObservingOpOf<S>,
// which hands each hook the op's own state type.
class ObservingOp : public Op {
 public:
  struct State {
    virtual ~State() = default;
  };
  ExecKind kind() const final { return ExecKind::Observing; }
  // Whether more than one observe pass may be needed (for tests and plans).
  virtual bool multi_pass() const { return false; }
  virtual std::unique_ptr<State> observe_begin(const TensorContext& ctx) const = 0;
  virtual void observe(State& s, std::span<const float> piece, uint64_t first) const = 0;
  virtual bool observe_again(State& s) const = 0;
  virtual void observe_end(State& s) const = 0;
  virtual void apply_observed(const State& s, std::span<float> piece, uint64_t first,
                              const TensorContext& ctx) const = 0;
  // The protocol above on the whole tensor; an op may override it with a faster whole-tensor
  // path that gives the same bytes (tests check both).
  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override;

 protected:
  using Op::Op;
};

template <class S>
class ObservingOpOf : public ObservingOp {
 protected:
  using ObservingOp::ObservingOp;
  virtual S begin(const TensorContext& ctx) const = 0;
  virtual void observe_piece(S& s, std::span<const float> piece, uint64_t first) const = 0;
  virtual bool again(S&) const { return false; }
  virtual void end(S&) const {}
  virtual void apply_piece(const S& s, std::span<float> piece, uint64_t first,
                           const TensorContext& ctx) const = 0;

 private:
  struct Holder final : State {
    explicit Holder(S v) : s(std::move(v)) {}
    S s;
  };
  static S& typed(State& st) { return static_cast<Holder&>(st).s; }
  static const S& typed(const State& st) { return static_cast<const Holder&>(st).s; }

 public:
  std::unique_ptr<State> observe_begin(const TensorContext& ctx) const final {
    return std::make_unique<Holder>(begin(ctx));
  }
  void observe(State& st, std::span<const float> piece, uint64_t first) const final {
    observe_piece(typed(st), piece, first);
  }
  bool observe_again(State& st) const final { return again(typed(st)); }
  void observe_end(State& st) const final { end(typed(st)); }
  void apply_observed(const State& st, std::span<float> piece, uint64_t first,
                      const TensorContext& ctx) const final {
    apply_piece(typed(st), piece, first, ctx);
  }
};

// Ops that need the whole tensor at once (lowrank's SVD, permute, magnitude scope=row, bitdelta
// with bits > 0 or a median): the engine admits them against its memory budget.
class WholeTensorOp : public Op {
 public:
  ExecKind kind() const final { return ExecKind::WholeTensor; }

 protected:
  using Op::Op;
};

// The streamed forms of an op, or nullptr when it is of another kind.
inline const PointwiseOp* as_pointwise(const Op& op) {
  return op.kind() == ExecKind::Pointwise ? static_cast<const PointwiseOp*>(&op) : nullptr;
}
inline const ObservingOp* as_observing(const Op& op) {
  return op.kind() == ExecKind::Observing ? static_cast<const ObservingOp*>(&op) : nullptr;
}

// Registry: builds an op from its spec, validating every key and range before any I/O.
// Throws deltaedit::Error(Usage) naming the op, the key and the valid range.
std::unique_ptr<Op> make_op(const OpSpec& spec);
// The declared parameters of an op (util/param_schema.h): the one schema that parsing,
// `deltaedit ops`, `edit --help` and the README table read.
using ParamSpec = util::ParamSpec;
// Every registered op: name, one-line summary, its declared keys, and those keys as one line
// ("p=0.9 [0, 1); k=0 any real; rescale=paper|l1").
struct OpInfo {
  std::string name, summary;
  std::vector<ParamSpec> params;
  std::string keys;
};
std::vector<OpInfo> list_ops();
// The keys every op accepts besides its own: include=REGEX, exclude=REGEX.
std::vector<ParamSpec> common_params();

}  // namespace deltaedit::edit
