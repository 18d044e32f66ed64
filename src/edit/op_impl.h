// Internal helpers shared by the op implementations and the registry (not part of the public
// interface in op.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edit/op.h"
#include "util/error.h"
#include "util/param_schema.h"
#include "util/philox.h"

namespace deltaedit::edit::detail {

using util::ParamSpec;

// Reads an op's parameters against its declared schema. The constructor checks every given key:
// unknown keys, values of the wrong kind or out of range, and missing required keys are
// Error(Usage) naming the op and the key. The accessors then return the given value or the
// declared default; asking for an undeclared key is a bug (Error(Internal)).
class ParamReader {
 public:
  ParamReader(const OpSpec& spec, std::span<const ParamSpec> schema);
  const std::string& op() const { return spec_.name; }
  bool has(std::string_view key) const;

  double real(std::string_view key) const;  // given, else the default
  std::optional<double> real_opt(std::string_view key) const;
  int64_t integer(std::string_view key) const;
  std::optional<int64_t> integer_opt(std::string_view key) const;
  std::string choice(std::string_view key) const;
  bool flag(std::string_view key) const;
  std::string text(std::string_view key) const;  // raw value ("" when absent)

  [[noreturn]] void fail(std::string_view key, const std::string& why) const;

 private:
  const ParamSpec& declared(std::string_view key) const;
  const std::string* given(std::string_view key) const;
  OpSpec spec_;
  std::vector<ParamSpec> schema_;  // the op's own keys, then include and exclude
  std::map<std::string, double, std::less<>> numbers_;  // parsed Number, Integer and Bool values
};

// An op whose arithmetic lives in a plain Core class shared by the op's execution kinds: its
// parameters, workspace and whole-tensor form are the Core's.
template <class Base, class Core>
class CoreOp : public Base {
 public:
  CoreOp(std::string name, Core core) : Base(std::move(name)), core_(std::move(core)) {}
  nlohmann::json own_params() const override { return core_.own_params(); }
  uint64_t workspace_bytes(std::span<const int64_t> shape) const override {
    return core_.workspace_bytes(shape);
  }
  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const override {
    return core_.apply(delta, ctx);
  }

 protected:
  Core core_;
};

// The observing form of such an op: the hooks are the Core's observe_begin(ctx) → State,
// observe(State&, piece, first), apply_observed(const State&, piece, first), and optionally
// observe_again(State&) (then the op is multi-pass) and observe_end(State&). Its whole-tensor
// form stays the Core's apply, which must give the same bytes (tests check both).
template <class Core, class State>
class ObservingCoreOp final : public CoreOp<ObservingOpOf<State>, Core> {
  static constexpr bool kMultiPass = requires(const Core& c, State& s) { c.observe_again(s); };

 public:
  using CoreOp<ObservingOpOf<State>, Core>::CoreOp;
  bool multi_pass() const override { return kMultiPass; }

 protected:
  State begin(const TensorContext& ctx) const override { return this->core_.observe_begin(ctx); }
  void observe_piece(State& st, std::span<const float> piece, uint64_t first) const override {
    this->core_.observe(st, piece, first);
  }
  bool again(State& st) const override {
    if constexpr (kMultiPass) return this->core_.observe_again(st);
    return false;
  }
  void end(State& st) const override {
    if constexpr (requires(const Core& c, State& s) { c.observe_end(s); })
      this->core_.observe_end(st);
  }
  void apply_piece(const State& st, std::span<float> piece, uint64_t first,
                   const TensorContext&) const override {
    this->core_.apply_observed(st, piece, first);
  }
};

// One op's declaration: its name, one-line summary, parameters and factory. Each op family's file
// defines the declarations of its ops; registry.cpp lists them once, in the order `deltaedit ops`
// shows them.
using OpFactory = std::unique_ptr<Op> (*)(const ParamReader&);
struct OpDecl {
  std::string name, summary;
  std::vector<ParamSpec> params;
  OpFactory factory = nullptr;
};
OpDecl dare_decl();
OpDecl drop_decl();
OpDecl biased_decl();
OpDecl magnitude_decl();
OpDecl bitdelta_decl();
OpDecl resample_decl();
OpDecl lowrank_decl();
OpDecl scale_decl();
OpDecl permute_decl();
OpDecl signflip_decl();

// ---- element helpers ----

// Bit pattern of |x|: for non-negative floats the integer order is the numeric order, ±0 map to
// 0, and every NaN sorts above +Inf. Gives a strict total order even with NaN inputs.
inline uint32_t abs_bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b & 0x7FFFFFFFu;
}

// ⌊frac·n⌋ computed in double, where a product within 1e-9 (relative) of an integer snaps to it,
// so decimal parameters behave as written (p=0.9, n=10 keeps ⌊0.1·10⌋ = 1, not 0).
inline int64_t floor_count(double frac, int64_t n) {
  const double r = frac * static_cast<double>(n);
  const double nearest = std::round(r);
  int64_t k = std::fabs(r - nearest) <= 1e-9 * std::max(1.0, std::fabs(r))
                  ? static_cast<int64_t>(nearest)
                  : static_cast<int64_t>(std::floor(r));
  return std::clamp<int64_t>(k, 0, n);
}

// Rows × cols view of a tensor for row-wise scopes: rows = shape[0], cols = the rest; a tensor
// with fewer than two dimensions is one row. Throws when the shape disagrees with the buffer.
struct RowView {
  int64_t rows = 1, cols = 0;
};
RowView row_view(std::span<const int64_t> shape, size_t n, std::string_view tensor);

// Product of the shape (1 for a scalar), checked against overflow.
int64_t shape_elements(std::span<const int64_t> shape);

// Selection mask of the random-drop family: element i is selected iff uniform(i) < p.
inline bool drawn(const util::KeyedRng& rng, uint64_t i, double p) { return rng.uniform(i) < p; }

// Calls fn(offset, sel, count) over [0, n) in cache-sized blocks, sel[j] ≠ 0 iff
// drawn(rng, first + offset + j, p): the draws of elements [first, first + n) of the tensor,
// batched (util::bernoulli_select).
inline constexpr size_t kSelectionBlock = 2048;  // the most elements fn is called with
template <class Fn>
void for_each_selection(const util::KeyedRng& rng, size_t n, double p, uint64_t first, Fn&& fn) {
  constexpr size_t kBlock = kSelectionBlock;
  alignas(32) uint32_t sel[kBlock];
  const uint64_t threshold = util::KeyedRng::uniform_threshold(p);
  for (size_t off = 0; off < n; off += kBlock) {
    const size_t m = std::min(kBlock, n - off);
    util::bernoulli_select(rng.key(), first + off, m, threshold, sel);
    fn(off, static_cast<const uint32_t*>(sel), m);
  }
}

inline util::KeyedRng rng_for(const TensorContext& ctx) {
  return util::KeyedRng(ctx.seed, ctx.name, ctx.op_index);
}

using util::format_real;

}  // namespace deltaedit::edit::detail
