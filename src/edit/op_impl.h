// Internal helpers shared by the op implementations and the registry (not part of the public
// interface in op.h).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "edit/op.h"
#include "util/error.h"
#include "util/philox.h"

namespace deltaedit::edit::detail {

// A closed, open or half-open interval; infinite ends are allowed.
struct Range {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_closed = true, hi_closed = true;
  bool contains(double v) const;
  std::string text() const;  // "[0, 1)"
};
inline constexpr double kInf = std::numeric_limits<double>::infinity();
inline Range closed(double lo, double hi) { return {lo, hi, true, true}; }
inline Range half_open(double lo, double hi) { return {lo, hi, true, false}; }    // [lo, hi)
inline Range open_closed(double lo, double hi) { return {lo, hi, false, true}; }  // (lo, hi]
inline Range any_real() { return {-kInf, kInf, false, false}; }

// Reads and validates an op's parameters. Every accessor records its key as valid; finish()
// rejects keys nobody asked for. All failures are Error(Usage) naming the op and the key.
class ParamReader {
 public:
  explicit ParamReader(const OpSpec& spec);
  const std::string& op() const { return spec_.name; }
  bool has(std::string_view key) const;

  double real(std::string_view key, double def, const Range& range);
  std::optional<double> real_opt(std::string_view key, const Range& range);
  int64_t integer(std::string_view key, int64_t def, int64_t lo, int64_t hi);
  std::optional<int64_t> integer_opt(std::string_view key, int64_t lo, int64_t hi);
  std::string choice(std::string_view key, std::string_view def,
                     std::initializer_list<std::string_view> options);
  bool flag(std::string_view key, bool def);
  std::string text(std::string_view key);  // raw value ("" when absent)

  [[noreturn]] void fail(std::string_view key, const std::string& why) const;
  void finish() const;

 private:
  const std::string* find(std::string_view key);
  OpSpec spec_;
  std::vector<std::string> valid_;
};

// Common base: name, filters, canonical parameters.
class OpBase : public Op {
 public:
  explicit OpBase(std::string name) : name_(std::move(name)) {}
  std::string_view name() const final { return name_; }
  nlohmann::json params() const final {
    nlohmann::json j = own_params();
    if (!filter_.include.empty()) j["include"] = filter_.include;
    if (!filter_.exclude.empty()) j["exclude"] = filter_.exclude;
    return j;
  }
  void set_filter(NameFilter f) { filter_ = std::move(f); }

 protected:
  virtual nlohmann::json own_params() const = 0;

 private:
  std::string name_;
  NameFilter filter_;
};

// Factories, one per op (each defined in its op family's file; listed once in registry.cpp).
using OpFactory = std::unique_ptr<OpBase> (*)(ParamReader&);
std::unique_ptr<OpBase> make_dare(ParamReader&);
std::unique_ptr<OpBase> make_drop(ParamReader&);
std::unique_ptr<OpBase> make_biased(ParamReader&);
std::unique_ptr<OpBase> make_magnitude(ParamReader&);
std::unique_ptr<OpBase> make_bitdelta(ParamReader&);
std::unique_ptr<OpBase> make_resample(ParamReader&);
std::unique_ptr<OpBase> make_lowrank(ParamReader&);
std::unique_ptr<OpBase> make_scale(ParamReader&);
std::unique_ptr<OpBase> make_permute(ParamReader&);
std::unique_ptr<OpBase> make_signflip(ParamReader&);

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
template <class Fn>
void for_each_selection(const util::KeyedRng& rng, size_t n, double p, uint64_t first, Fn&& fn) {
  constexpr size_t kBlock = 2048;
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

std::string format_real(double v);

}  // namespace deltaedit::edit::detail
