#include "merge/params.h"

#include <algorithm>
#include <cmath>

namespace deltaedit::merge {

double interpolate(const std::vector<double>& g, double t) {
  if (g.empty()) return 0.0;
  const size_t m = g.size();
  if (m == 1) return g[0];
  const double s = t * double(m - 1);
  double fl = std::floor(s);
  if (fl < 0) fl = 0;
  size_t i0 = std::min(size_t(fl), m - 1);
  const size_t i1 = std::min(m - 1, i0 + 1);
  const double f = s - double(i0);
  return (1.0 - f) * g[i0] + f * g[i1];
}

double evaluate(const Setting& s, double t) {
  return s.gradient ? interpolate(s.values, t) : s.values.at(0);
}

bool filter_matches(const std::optional<std::string>& filter, std::string_view name) {
  if (!filter || *filter == "*") return true;
  return name.find(*filter) != std::string_view::npos;
}

namespace {
const Setting* select(const ParamValue& v, std::string_view name) {
  if (v.kind != ParamValue::Kind::Conditions) return &v.direct;
  for (const auto& c : v.conditions)
    if (filter_matches(c.filter, name)) return &c.value;
  return nullptr;
}
}  // namespace

std::optional<double> evaluate(const ParamValue& v, std::string_view name, double t) {
  const Setting* s = select(v, name);
  if (!s) return std::nullopt;
  return evaluate(*s, t);
}

std::optional<Evaluated> lookup(const ParamSpec& spec, const ParamLevels& levels,
                                std::string_view name, double t) {
  const std::pair<const Params*, const char*> order[] = {
      {spec.per_model ? levels.source : nullptr, "model"},
      {levels.slice, "slice"},
      {levels.top, "top"}};
  for (const auto& [params, level] : order) {
    if (!params) continue;
    const ParamValue* v = find_param(*params, spec.name);
    if (!v) continue;
    const Setting* s = select(*v, name);
    if (!s) continue;
    return Evaluated{evaluate(*s, t), level, s->gradient && s->values.size() > 1, s};
  }
  if (spec.default_value) return Evaluated{*spec.default_value, "default", false, nullptr};
  return std::nullopt;
}

}  // namespace deltaedit::merge
