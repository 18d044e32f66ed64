// The edit-operation interface. An op turns the running delta Δ (f32, one tensor) into Δ' in place.
// Ops never do I/O; the engine streams tensors through them. See SPEC.md §2–§3.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "linalg/lowrank.h"

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

class Op {
 public:
  virtual ~Op() = default;
  virtual std::string_view name() const = 0;
  // The canonical, fully-defaulted parameters (recorded in metadata and deltaedit.json).
  virtual nlohmann::json params() const = 0;
  virtual bool needs_grad() const { return false; }
  // Whether this op edits a tensor of this shape at all (lowrank: 2-D only).
  virtual bool applies_to(std::span<const int64_t> shape) const { return true; }
  // Upper bound of extra bytes of workspace for a tensor of this shape (SVD, sort buffers).
  virtual uint64_t workspace_bytes(std::span<const int64_t> shape) const { return 0; }
  // Edit Δ in place. Deterministic: depends only on (delta, ctx), never on threads or globals.
  // The default serves pointwise ops (apply_block on the whole tensor) and two-pass ops (observe
  // the whole tensor, then apply_observed); other ops override it.
  virtual OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const;
  // Pointwise ops: Δ'_i depends only on (Δ_i, i, ctx), so the engine streams the tensor through
  // apply_block in pieces without holding it whole. apply_block(piece, first, ctx) edits the
  // elements [first, first + piece.size()) exactly as apply() on the whole tensor would.
  virtual bool pointwise() const { return false; }
  virtual void apply_block(std::span<float> piece, uint64_t first, const TensorContext& ctx) const;

  // Two-pass ops (bitdelta's scale): a first pass observes the whole tensor in order, in pieces,
  // then every piece is edited pointwise with what was observed. For any cut into pieces,
  //   s = observe_begin(ctx); observe(*s, piece_k, first_k) for k in order; observe_end(*s);
  //   apply_observed(*s, piece_k, first_k, ctx) for each k
  // gives the bytes of apply() on the whole tensor.
  struct State {
    virtual ~State() = default;
  };
  virtual bool two_pass() const { return false; }
  virtual std::unique_ptr<State> observe_begin(const TensorContext& ctx) const;
  virtual void observe(State& s, std::span<const float> piece, uint64_t first) const;
  virtual void observe_end(State& s) const;
  virtual void apply_observed(const State& s, std::span<float> piece, uint64_t first,
                              const TensorContext& ctx) const;

  // Multi-pass ops (magnitude's threshold select): like two-pass ops, but the tensor is observed
  // in one or more complete passes, each in index order; after every pass observe_again says
  // whether one more is needed. For any cut into pieces,
  //   s = observe_begin(ctx);
  //   do { observe(*s, piece_k, first_k) for k in order } while (observe_again(*s));
  //   observe_end(*s); apply_observed(*s, piece_k, first_k, ctx) for each k
  // gives the bytes of apply() on the whole tensor. (A two-pass op is the one-pass case.)
  virtual bool multi_pass() const { return false; }
  virtual bool observe_again(State& s) const;
  // Whether the engine runs this op by observe passes and apply_observed (two- or multi-pass).
  bool observes() const { return two_pass() || multi_pass(); }
};

// Registry: builds an op from its spec, validating every key and range before any I/O.
// Throws deltaedit::Error(Usage) naming the op, the key and the valid range.
std::unique_ptr<Op> make_op(const OpSpec& spec);
// Names of all registered ops with a one-line description and their keys (for --help).
struct OpInfo {
  std::string name, summary, keys;
};
std::vector<OpInfo> list_ops();


}  // namespace deltaedit::edit
