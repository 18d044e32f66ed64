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

// The registered ops, one line each, in the order `deltaedit ops` lists them.
constexpr detail::OpDecl (*kOps[])() = {
    &detail::dare_decl,     &detail::drop_decl,     &detail::biased_decl,  &detail::magnitude_decl,
    &detail::bitdelta_decl, &detail::resample_decl, &detail::lowrank_decl, &detail::scale_decl,
    &detail::permute_decl,  &detail::signflip_decl,
};

void check_regex(const std::string& op, const char* key, const std::string& pattern) {
  if (pattern.empty()) return;
  util::RegexCompileError err;
  if (util::Regex::compile(pattern, util::RegexOptions{}, err)) return;
  usage("op '" + op + "': key '" + key + "' = '" + pattern +
        "' is not a valid regular expression (" + err.reason + " at offset " +
        std::to_string(err.offset) + ")");
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
    if (!ident_char(c) && c != '-')
      usage(shown + ": invalid character '" + std::string(1, c) + "' in op name");
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
      usage(shown + ": parameter '" + std::string(trim(piece)) +
            "' has no '=' (expected key=value)");
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

std::vector<ParamSpec> common_params() {
  return {ParamSpec::text("include", "edit only tensors whose name matches (PCRE2, unanchored)"),
          ParamSpec::text("exclude", "leave tensors whose name matches unedited")};
}

std::unique_ptr<Op> make_op(const OpSpec& spec) {
  std::optional<detail::OpDecl> decl;
  for (auto d : kOps) {
    detail::OpDecl e = d();
    if (spec.name == e.name) decl = std::move(e);
  }
  if (!decl) {
    std::string names;
    for (auto d : kOps) names += (names.empty() ? "" : ", ") + d().name;
    usage("unknown op '" + spec.name + "' (known ops: " + names + ")");
  }
  const detail::ParamReader reader(spec, decl->params);
  std::unique_ptr<Op> op = decl->factory(reader);
  NameFilter filter;
  filter.include = reader.text("include");
  filter.exclude = reader.text("exclude");
  check_regex(spec.name, "include", filter.include);
  check_regex(spec.name, "exclude", filter.exclude);
  op->set_filter(std::move(filter));
  return op;
}

std::vector<OpInfo> list_ops() {
  std::vector<OpInfo> out;
  for (auto d : kOps) {
    detail::OpDecl e = d();
    OpInfo info{e.name, e.summary, e.params, {}};
    std::string keys, constraints;
    for (const ParamSpec& p : e.params) {
      keys += (keys.empty() ? "" : "; ") + util::key_text(p);
      if (!p.constraint.empty() && constraints.find(p.constraint) == std::string::npos)
        constraints += (constraints.empty() ? "" : "; ") + p.constraint;
    }
    if (!constraints.empty()) keys += " (" + constraints + ")";
    info.keys = keys.empty() ? "(none)" : keys;
    out.push_back(std::move(info));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers shared with the ops

namespace detail {

ParamReader::ParamReader(const OpSpec& spec, std::span<const ParamSpec> schema)
    : spec_(spec), schema_(schema.begin(), schema.end()) {
  for (ParamSpec& p : common_params()) schema_.push_back(std::move(p));
  for (const auto& [key, value] : spec_.params) {
    const ParamSpec* p = nullptr;
    for (const ParamSpec& q : schema_)
      if (q.name == key) p = &q;
    if (p == nullptr) {
      std::string list;
      for (const ParamSpec& q : schema_) list += (list.empty() ? "" : ", ") + q.name;
      usage("op '" + spec_.name + "': unknown key '" + key + "' (valid keys: " + list + ")");
    }
    std::string_view v = value;
    switch (p->kind) {
      case ParamSpec::Kind::Number: {
        if (!v.empty() && v.front() == '+') v.remove_prefix(1);
        double x = 0.0;
        const auto res = std::from_chars(v.data(), v.data() + v.size(), x);
        if (res.ec != std::errc() || res.ptr != v.data() + v.size() || v.empty() ||
            !std::isfinite(x))
          fail(key, "= '" + value + "' is not a finite number (valid range " +
                        util::range_text(*p) + ")");
        if (!p->in_range(x)) fail(key, "= " + value + " is out of range " + util::range_text(*p));
        numbers_[key] = x;
        break;
      }
      case ParamSpec::Kind::Integer: {
        if (!v.empty() && v.front() == '+') v.remove_prefix(1);
        int64_t x = 0;
        const auto res = std::from_chars(v.data(), v.data() + v.size(), x);
        if (res.ec == std::errc::result_out_of_range)
          fail(key, "= " + value + " is out of range " + util::range_text(*p));
        if (res.ec != std::errc() || res.ptr != v.data() + v.size() || v.empty())
          fail(key,
               "= '" + value + "' is not an integer (valid range " + util::range_text(*p) + ")");
        if (!p->in_range(static_cast<double>(x)))
          fail(key, "= " + value + " is out of range " + util::range_text(*p));
        numbers_[key] = static_cast<double>(x);
        break;
      }
      case ParamSpec::Kind::Bool:
        if (v == "true" || v == "yes" || v == "on" || v == "1")
          numbers_[key] = 1.0;
        else if (v == "false" || v == "no" || v == "off" || v == "0")
          numbers_[key] = 0.0;
        else
          fail(key, "= '" + value + "' is not a boolean (true|false|yes|no|on|off|1|0)");
        break;
      case ParamSpec::Kind::Choice:
        if (std::find(p->choices.begin(), p->choices.end(), value) == p->choices.end())
          fail(key, "= '" + value + "' is not one of " + util::range_text(*p));
        break;
      case ParamSpec::Kind::Text:
        break;
    }
  }
  for (const ParamSpec& p : schema_)
    if (p.required && given(p.name) == nullptr)
      fail(p.name, "is required (valid range " + util::range_text(p) + ")");
}

bool ParamReader::has(std::string_view key) const { return given(key) != nullptr; }

const std::string* ParamReader::given(std::string_view key) const {
  for (const auto& [k, v] : spec_.params)
    if (k == key) return &v;
  return nullptr;
}

const ParamSpec& ParamReader::declared(std::string_view key) const {
  for (const ParamSpec& p : schema_)
    if (p.name == key) return p;
  throw Error(ErrorKind::Internal, "op '" + spec_.name + "' reads key '" + std::string(key) +
                                       "', which it does not declare");
}

void ParamReader::fail(std::string_view key, const std::string& why) const {
  usage("op '" + spec_.name + "': key '" + std::string(key) + "' " + why);
}

std::optional<double> ParamReader::real_opt(std::string_view key) const {
  const ParamSpec& p = declared(key);
  if (p.kind != ParamSpec::Kind::Number && p.kind != ParamSpec::Kind::Integer)
    throw Error(ErrorKind::Internal,
                "op '" + spec_.name + "': key '" + p.name + "' is not a number");
  const auto it = numbers_.find(key);
  if (it != numbers_.end()) return it->second;
  return std::nullopt;
}

double ParamReader::real(std::string_view key) const {
  if (auto v = real_opt(key)) return *v;
  const ParamSpec& p = declared(key);
  if (!p.default_value)
    throw Error(ErrorKind::Internal,
                "op '" + spec_.name + "': key '" + p.name + "' has no default");
  return *p.default_value;
}

std::optional<int64_t> ParamReader::integer_opt(std::string_view key) const {
  const auto v = real_opt(key);
  if (!v) return std::nullopt;
  return static_cast<int64_t>(*v);
}

int64_t ParamReader::integer(std::string_view key) const { return static_cast<int64_t>(real(key)); }

std::string ParamReader::choice(std::string_view key) const {
  const ParamSpec& p = declared(key);
  if (p.kind != ParamSpec::Kind::Choice)
    throw Error(ErrorKind::Internal,
                "op '" + spec_.name + "': key '" + p.name + "' is not a choice");
  const std::string* v = given(key);
  return v != nullptr ? *v : p.default_choice;
}

bool ParamReader::flag(std::string_view key) const {
  const ParamSpec& p = declared(key);
  if (p.kind != ParamSpec::Kind::Bool)
    throw Error(ErrorKind::Internal,
                "op '" + spec_.name + "': key '" + p.name + "' is not a boolean");
  const auto it = numbers_.find(key);
  return (it != numbers_.end() ? it->second : p.default_value.value_or(0.0)) != 0.0;
}

std::string ParamReader::text(std::string_view key) const {
  declared(key);
  const std::string* v = given(key);
  return v == nullptr ? std::string() : *v;
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
                  "shape has " + std::to_string(shape_elements(shape)) +
                      " elements but the buffer holds " + std::to_string(n),
                  "", std::string(tensor));
    }
    return v;
  }
  const int64_t total = shape_elements(shape);
  if (total != static_cast<int64_t>(n)) {
    throw Error(ErrorKind::Internal,
                "shape has " + std::to_string(total) + " elements but the buffer holds " +
                    std::to_string(n),
                "", std::string(tensor));
  }
  v.rows = shape[0];
  v.cols = v.rows == 0 ? 0 : total / v.rows;
  return v;
}

}  // namespace detail
nlohmann::json Op::params() const {
  nlohmann::json j = own_params();
  if (!filter_.include.empty()) j["include"] = filter_.include;
  if (!filter_.exclude.empty()) j["exclude"] = filter_.exclude;
  return j;
}

OpOutcome ObservingOp::apply(std::span<float> delta, const TensorContext& ctx) const {
  auto s = observe_begin(ctx);
  do {
    observe(*s, delta, 0);
  } while (observe_again(*s));
  observe_end(*s);
  apply_observed(*s, delta, 0, ctx);
  return {};
}

}  // namespace deltaedit::edit
