#include "util/param_schema.h"

#include <charconv>
#include <cmath>

namespace deltaedit::util {

ParamSpec ParamSpec::number(std::string name, std::optional<double> def, double lo, double hi,
                            std::string doc, bool lo_open, bool hi_open) {
  ParamSpec p(std::move(name), Kind::Number, false, def, false, lo, hi, std::move(doc));
  p.min_open = lo_open;
  p.max_open = hi_open;
  return p;
}

ParamSpec ParamSpec::integer(std::string name, std::optional<int64_t> def, int64_t lo, int64_t hi,
                             std::string doc) {
  std::optional<double> d;
  if (def) d = static_cast<double>(*def);
  return ParamSpec(std::move(name), Kind::Integer, false, d, false, static_cast<double>(lo),
                   static_cast<double>(hi), std::move(doc));
}

ParamSpec ParamSpec::boolean(std::string name, bool def, std::string doc) {
  return ParamSpec(std::move(name), Kind::Bool, false, def ? 1.0 : 0.0, false, 0.0, 1.0,
                   std::move(doc));
}

ParamSpec ParamSpec::choice(std::string name, std::vector<std::string> options, std::string def,
                            std::string doc) {
  ParamSpec p;
  p.name = std::move(name);
  p.kind = Kind::Choice;
  p.choices = std::move(options);
  p.default_choice = std::move(def);
  p.doc = std::move(doc);
  return p;
}

ParamSpec ParamSpec::text(std::string name, std::string doc) {
  ParamSpec p;
  p.name = std::move(name);
  p.kind = Kind::Text;
  p.doc = std::move(doc);
  return p;
}

bool ParamSpec::in_range(double v) const {
  if (std::isnan(v)) return false;
  const bool lo_ok = min_open ? v > min : v >= min;
  const bool hi_ok = max_open ? v < max : v <= max;
  return lo_ok && hi_ok;
}

std::string format_real(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

const char* kind_name(ParamSpec::Kind k) {
  switch (k) {
    case ParamSpec::Kind::Number:
      return "number";
    case ParamSpec::Kind::Bool:
      return "bool";
    case ParamSpec::Kind::Integer:
      return "integer";
    case ParamSpec::Kind::Choice:
      return "choice";
    case ParamSpec::Kind::Text:
      return "text";
  }
  return "unknown";
}

std::string range_text(const ParamSpec& p) {
  switch (p.kind) {
    case ParamSpec::Kind::Bool:
      return "true|false";
    case ParamSpec::Kind::Text:
      return "regex";
    case ParamSpec::Kind::Choice: {
      std::string s;
      for (const auto& c : p.choices) s += (s.empty() ? "" : "|") + c;
      return s;
    }
    case ParamSpec::Kind::Number:
    case ParamSpec::Kind::Integer:
      break;
  }
  const bool lo = p.bounded_below(), hi = p.bounded_above();
  // An upper end of 2^31 − 1 or more on an integer reads better as the power it stands for.
  auto end = [&](double v) {
    if (p.kind == ParamSpec::Kind::Integer && v == 2147483647.0) return std::string("2^31");
    return format_real(v);
  };
  if (!lo && !hi) return p.kind == ParamSpec::Kind::Integer ? "any integer" : "any real";
  const bool hi_open =
      !hi || p.max_open || (p.kind == ParamSpec::Kind::Integer && p.max == 2147483647.0);
  return std::string(p.min_open || !lo ? "(" : "[") +
         end(lo ? p.min : -std::numeric_limits<double>::infinity()) + ", " +
         end(hi ? p.max : std::numeric_limits<double>::infinity()) + (hi_open ? ")" : "]");
}

std::string default_text(const ParamSpec& p) {
  switch (p.kind) {
    case ParamSpec::Kind::Choice:
      return p.default_choice;
    case ParamSpec::Kind::Text:
      return "";
    case ParamSpec::Kind::Bool:
      if (!p.default_value) return "";
      return *p.default_value != 0.0 ? "true" : "false";
    case ParamSpec::Kind::Number:
    case ParamSpec::Kind::Integer:
      return p.default_value ? format_real(*p.default_value) : "";
  }
  return "";
}

std::string key_text(const ParamSpec& p) {
  const std::string def = default_text(p);
  std::string s = p.name;
  if (p.kind == ParamSpec::Kind::Choice) {
    // "rescale=paper|l1": the default first.
    s += "=" + def;
    for (const auto& c : p.choices)
      if (c != def) s += "|" + c;
    return s;
  }
  if (!def.empty()) s += "=" + def;
  if (p.required) s += " (required)";
  if (p.kind != ParamSpec::Kind::Bool || def.empty()) s += " " + range_text(p);
  return s;
}

nlohmann::json to_json(const ParamSpec& p) {
  nlohmann::json j = {{"name", p.name},
                      {"kind", kind_name(p.kind)},
                      {"required", p.required},
                      {"range", range_text(p)},
                      {"doc", p.doc}};
  const std::string def = default_text(p);
  if (p.kind == ParamSpec::Kind::Number || p.kind == ParamSpec::Kind::Integer)
    j["default"] = p.default_value ? nlohmann::json(*p.default_value) : nlohmann::json(nullptr);
  else if (p.kind == ParamSpec::Kind::Bool)
    j["default"] =
        p.default_value ? nlohmann::json(*p.default_value != 0.0) : nlohmann::json(nullptr);
  else
    j["default"] = def.empty() ? nlohmann::json(nullptr) : nlohmann::json(def);
  if (p.per_model) j["per_model"] = true;
  if (!p.choices.empty()) j["choices"] = p.choices;
  if (!p.constraint.empty()) j["constraint"] = p.constraint;
  return j;
}

}  // namespace deltaedit::util
