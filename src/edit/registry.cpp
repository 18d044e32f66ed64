// The op registry: spec parsing, parameter validation, the table of ops, and the one routine
// that rebuilds low-rank deltas (Δ' = U·diag(S)·Vᵀ in f32).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>
#include <system_error>

#include "edit/op.h"
#include "edit/op_impl.h"
#include "util/error.h"
#include "util/regex.h"

namespace deltaedit::edit {

namespace {

[[noreturn]] void usage(const std::string& msg) { throw Error(ErrorKind::Usage, msg); }

std::string_view trim(std::string_view s) {
  const auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

bool ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }

// Whether `s` begins with optional blanks, an identifier, optional blanks and '='.
bool starts_with_key(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  if (i >= s.size() || !ident_start(s[i])) return false;
  while (i < s.size() && ident_char(s[i])) ++i;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return i < s.size() && s[i] == '=';
}

struct Entry {
  const char* name;
  const char* summary;
  const char* keys;
  detail::OpFactory factory;
};

// One line per op.
constexpr Entry kOps[] = {
    {"dare", "random drop with rescale: Δ' = k·M⊙Δ + (1−k·p)/(1−p)·(1−M)⊙Δ, M~Bernoulli(p)",
     "p=0.9 [0, 1); k=0 (any real); rescale=paper|l1", &detail::make_dare},
    {"drop", "random drop without rescale: Δ' = (1−M)⊙Δ, M~Bernoulli(p)", "p=0.9 [0, 1]",
     &detail::make_drop},
    {"biased", "dare with a chosen mask: M=[Δ<0] (by=delta) or M=[Δ·G<0] (by=grad)",
     "by=delta|grad; k=0.5 (any real)", &detail::make_biased},
    {"magnitude", "keep the ⌊(1−p)·n⌋ largest |Δ| per scope (ties: lower index), zero the rest",
     "p=0.9 [0, 1]; scope=tensor|row", &detail::make_magnitude},
    {"bitdelta", "Δ' = s·stat(|Δ|)·sign(Δ); bits=b: 2^b equal-count magnitude blocks",
     "stat=mean|median|rms; s=1 [0, inf); sign0=zero|plus; granularity=tensor|row; bits=0 [0, 8]",
     &detail::make_bitdelta},
    {"resample", "Δ' = m⊙sign(Δ), m ~ U(0, 2μ) or N(μ, σ²), μ = s·mean|Δ|",
     "dist=uniform|normal; s=1 [0, inf); sigma=1 (σ/μ) [0, inf); clip=false", &detail::make_resample},
    {"lowrank", "Δ' = U_r Σ_r V_rᵀ of the SVD of Δ (2-D tensors only)",
     "one of rank=r [0, 2^31), ratio=0.1 [0, 1], energy=e (0, 1]; method=exact|randomized; "
     "oversample=10 [0, 4096]; power_iters=4 [0, 64]",
     &detail::make_lowrank},
    {"scale", "Δ' = (1+α)·Δ (α>0 extrapolates, α=−1 gives the base)", "alpha=0 (any real)",
     &detail::make_scale},
    {"permute", "shuffle the magnitudes |Δ| within the tensor (seeded), keep signs", "(none)",
     &detail::make_permute},
    {"signflip", "flip the sign of a random fraction q of entries; rescale=mean divides by 1−2q",
     "q (required) [0, 1]; rescale=none|mean (then q in [0, 0.5))", &detail::make_signflip},
};

void check_regex(const std::string& op, const char* key, const std::string& pattern) {
  if (pattern.empty()) return;
  util::RegexCompileError err;
  if (util::Regex::compile(pattern, util::RegexOptions{}, err)) return;
  usage("op '" + op + "': key '" + key + "' = '" + pattern + "' is not a valid regular expression (" +
        err.reason + " at offset " + std::to_string(err.offset) + ")");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Spec parsing

OpSpec parse_op_spec(std::string_view text) {
  OpSpec spec;
  spec.text = std::string(text);
  const std::string shown = "op spec '" + spec.text + "'";
  const size_t colon = text.find(':');
  const std::string_view name = trim(text.substr(0, colon));
  if (name.empty()) usage(shown + ": empty op name");
  for (char c : name) {
    if (!ident_char(c) && c != '-') usage(shown + ": invalid character '" + std::string(1, c) + "' in op name");
  }
  spec.name = std::string(name);
  if (colon == std::string_view::npos) return spec;
  std::string_view rest = text.substr(colon + 1);
  if (trim(rest).empty()) return spec;
  // Split at commas that are followed by `key=`; other commas belong to the value.
  std::vector<std::string_view> pieces;
  size_t start = 0;
  for (size_t i = 0; i < rest.size(); ++i) {
    if (rest[i] == ',' && starts_with_key(rest.substr(i + 1))) {
      pieces.push_back(rest.substr(start, i - start));
      start = i + 1;
    }
  }
  pieces.push_back(rest.substr(start));
  for (std::string_view piece : pieces) {
    const size_t eq = piece.find('=');
    if (eq == std::string_view::npos) {
      usage(shown + ": parameter '" + std::string(trim(piece)) + "' has no '=' (expected key=value)");
    }
    const std::string key(trim(piece.substr(0, eq)));
    const std::string value(trim(piece.substr(eq + 1)));
    if (key.empty() || !ident_start(key[0]) ||
        !std::all_of(key.begin(), key.end(), [](char c) { return ident_char(c); })) {
      usage(shown + ": invalid key '" + key + "'");
    }
    if (value.empty()) usage("op '" + spec.name + "': key '" + key + "' has an empty value");
    for (const auto& [k, v] : spec.params) {
      if (k == key) usage("op '" + spec.name + "': key '" + key + "' is given twice");
    }
    spec.params.emplace_back(key, value);
  }
  return spec;
}

NameFilter name_filter(const OpSpec& spec) {
  NameFilter f;
  for (const auto& [k, v] : spec.params) {
    if (k == "include") f.include = v;
    if (k == "exclude") f.exclude = v;
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// Registry

std::unique_ptr<Op> make_op(const OpSpec& spec) {
  const Entry* entry = nullptr;
  for (const Entry& e : kOps) {
    if (spec.name == e.name) entry = &e;
  }
  if (entry == nullptr) {
    std::string names;
    for (const Entry& e : kOps) names += std::string(names.empty() ? "" : ", ") + e.name;
    usage("unknown op '" + spec.name + "' (known ops: " + names + ")");
  }
  detail::ParamReader reader(spec);
  std::unique_ptr<detail::OpBase> op = entry->factory(reader);
  NameFilter filter;
  filter.include = reader.text("include");
  filter.exclude = reader.text("exclude");
  reader.finish();
  check_regex(spec.name, "include", filter.include);
  check_regex(spec.name, "exclude", filter.exclude);
  op->set_filter(std::move(filter));
  return op;
}

std::vector<OpInfo> list_ops() {
  std::vector<OpInfo> out;
  for (const Entry& e : kOps) {
    out.push_back({e.name, e.summary, e.keys});  // include=, exclude= are common to all ops
  }
  return out;
}


// ---------------------------------------------------------------------------------------------
// Helpers shared with the ops

namespace detail {

std::string format_real(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

bool Range::contains(double v) const {
  if (std::isnan(v)) return false;
  const bool lo_ok = lo_closed ? v >= lo : v > lo;
  const bool hi_ok = hi_closed ? v <= hi : v < hi;
  return lo_ok && hi_ok;
}

std::string Range::text() const {
  return std::string(lo_closed && std::isfinite(lo) ? "[" : "(") + format_real(lo) + ", " + format_real(hi) +
         (hi_closed && std::isfinite(hi) ? "]" : ")");
}

ParamReader::ParamReader(const OpSpec& spec) : spec_(spec) {}

bool ParamReader::has(std::string_view key) const {
  for (const auto& [k, v] : spec_.params) {
    if (k == key) return true;
  }
  return false;
}

const std::string* ParamReader::find(std::string_view key) {
  if (std::find(valid_.begin(), valid_.end(), key) == valid_.end()) valid_.emplace_back(key);
  for (const auto& [k, v] : spec_.params) {
    if (k == key) return &v;
  }
  return nullptr;
}

void ParamReader::fail(std::string_view key, const std::string& why) const {
  usage("op '" + spec_.name + "': key '" + std::string(key) + "' " + why);
}

std::optional<double> ParamReader::real_opt(std::string_view key, const Range& range) {
  const std::string* v = find(key);
  if (v == nullptr) return std::nullopt;
  std::string_view s = *v;
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  double x = 0.0;
  const auto res = std::from_chars(s.data(), s.data() + s.size(), x);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || s.empty() || !std::isfinite(x)) {
    fail(key, "= '" + *v + "' is not a finite number (valid range " + range.text() + ")");
  }
  if (!range.contains(x)) fail(key, "= " + *v + " is out of range " + range.text());
  return x;
}

double ParamReader::real(std::string_view key, double def, const Range& range) {
  return real_opt(key, range).value_or(def);
}

std::optional<int64_t> ParamReader::integer_opt(std::string_view key, int64_t lo, int64_t hi) {
  const std::string* v = find(key);
  if (v == nullptr) return std::nullopt;
  std::string_view s = *v;
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  int64_t x = 0;
  std::string range = "[";
  range.append(std::to_string(lo)).append(", ").append(std::to_string(hi)).append("]");
  const auto res = std::from_chars(s.data(), s.data() + s.size(), x);
  if (res.ec == std::errc::result_out_of_range) fail(key, "= " + *v + " is out of range " + range);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size() || s.empty()) {
    fail(key, "= '" + *v + "' is not an integer (valid range " + range + ")");
  }
  if (x < lo || x > hi) fail(key, "= " + *v + " is out of range " + range);
  return x;
}

int64_t ParamReader::integer(std::string_view key, int64_t def, int64_t lo, int64_t hi) {
  return integer_opt(key, lo, hi).value_or(def);
}

std::string ParamReader::choice(std::string_view key, std::string_view def,
                                std::initializer_list<std::string_view> options) {
  const std::string* v = find(key);
  if (v == nullptr) return std::string(def);
  for (std::string_view o : options) {
    if (*v == o) return *v;
  }
  std::string list;
  for (std::string_view o : options) list += std::string(list.empty() ? "" : "|") + std::string(o);
  fail(key, "= '" + *v + "' is not one of " + list);
}

bool ParamReader::flag(std::string_view key, bool def) {
  const std::string* v = find(key);
  if (v == nullptr) return def;
  if (*v == "true" || *v == "yes" || *v == "on" || *v == "1") return true;
  if (*v == "false" || *v == "no" || *v == "off" || *v == "0") return false;
  fail(key, "= '" + *v + "' is not a boolean (true|false|yes|no|on|off|1|0)");
}

std::string ParamReader::text(std::string_view key) {
  const std::string* v = find(key);
  return v == nullptr ? std::string() : *v;
}

void ParamReader::finish() const {
  for (const auto& [k, v] : spec_.params) {
    if (std::find(valid_.begin(), valid_.end(), k) == valid_.end()) {
      std::string list;
      for (const std::string& s : valid_) list += std::string(list.empty() ? "" : ", ") + s;
      usage("op '" + spec_.name + "': unknown key '" + k + "' (valid keys: " + list + ")");
    }
  }
}

int64_t shape_elements(std::span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorKind::Format, "negative dimension in tensor shape");
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      throw Error(ErrorKind::Format, "tensor shape overflows 64 bits");
    }
    n *= d;
  }
  return n;
}

RowView row_view(std::span<const int64_t> shape, size_t n, std::string_view tensor) {
  RowView v;
  if (shape.size() < 2) {
    v.rows = n == 0 ? 0 : 1;
    v.cols = static_cast<int64_t>(n);
    if (!shape.empty() && shape_elements(shape) != static_cast<int64_t>(n)) {
      throw Error(ErrorKind::Internal,
                  "shape has " + std::to_string(shape_elements(shape)) + " elements but the buffer holds " +
                      std::to_string(n),
                  "", std::string(tensor));
    }
    return v;
  }
  const int64_t total = shape_elements(shape);
  if (total != static_cast<int64_t>(n)) {
    throw Error(ErrorKind::Internal,
                "shape has " + std::to_string(total) + " elements but the buffer holds " + std::to_string(n), "",
                std::string(tensor));
  }
  v.rows = shape[0];
  v.cols = v.rows == 0 ? 0 : total / v.rows;
  return v;
}

}  // namespace detail
OpOutcome Op::apply(std::span<float> delta, const TensorContext& ctx) const {
  if (pointwise()) {
    apply_block(delta, 0, ctx);
    return {};
  }
  if (observes()) {
    auto s = observe_begin(ctx);
    do {
      observe(*s, delta, 0);
    } while (observe_again(*s));
    observe_end(*s);
    apply_observed(*s, delta, 0, ctx);
    return {};
  }
  throw Error(ErrorKind::Internal, "op '" + std::string(name()) + "' has no whole-tensor form", "",
              std::string(ctx.name));
}

void Op::apply_block(std::span<float>, uint64_t, const TensorContext& ctx) const {
  throw Error(ErrorKind::Internal, "op '" + std::string(name()) + "' is not pointwise", "", std::string(ctx.name));
}

std::unique_ptr<Op::State> Op::observe_begin(const TensorContext& ctx) const {
  throw Error(ErrorKind::Internal, "op '" + std::string(name()) + "' is not two-pass", "", std::string(ctx.name));
}
void Op::observe(State&, std::span<const float>, uint64_t) const {
  throw Error(ErrorKind::Internal, "op '" + std::string(name()) + "' is not two-pass");
}
void Op::observe_end(State&) const {
  throw Error(ErrorKind::Internal, "op '" + std::string(name()) + "' is not two-pass");
}
bool Op::observe_again(State&) const { return false; }
void Op::apply_observed(const State&, std::span<float>, uint64_t, const TensorContext& ctx) const {
  throw Error(ErrorKind::Internal, "op '" + std::string(name()) + "' is not two-pass", "", std::string(ctx.name));
}

}  // namespace deltaedit::edit
