// Parameter evaluation (MERGE.md §1.2–§1.4): scalars, layer gradients interpolated in double,
// first-match substring condition lists, and mergekit's precedence of levels.
#pragma once
#include <optional>
#include <string>
#include <string_view>

#include "merge/config.h"

namespace deltaedit::merge {

// g evaluated at t ∈ [0, 1]: s = t(m−1), i0 = ⌊s⌋, i1 = min(m−1, i0+1), f = s − i0,
// (1−f)·g[i0] + f·g[i1], in double.
double interpolate(const std::vector<double>& g, double t);
double evaluate(const Setting& s, double t);

// Whether a condition's filter matches `name`: absent, "*", or a case-sensitive substring.
bool filter_matches(const std::optional<std::string>& filter, std::string_view name);

// A parameter at one level for tensor `name` at position t; nullopt when the condition list
// matches nothing (the lookup falls through to the next level).
std::optional<double> evaluate(const ParamValue& v, std::string_view name, double t);

// Where a value came from (for the dry-run plan and the §5 warnings).
struct Evaluated {
  double value = 0;
  std::string level;  // "model", "slice", "top", "default"
  bool from_gradient = false;
  const Setting* setting = nullptr;  // the gradient or scalar that produced it (null for defaults)
};

// The levels one lookup consults, most specific first (§1.4). `source` is consulted only for
// per-model parameters; a missing level is null.
struct ParamLevels {
  const Params* source = nullptr;
  const Params* slice = nullptr;
  const Params* top = nullptr;
};

// The first level that defines `spec.name` for tensor `name` at t, else the default, else nullopt
// (the caller reports a missing required parameter).
std::optional<Evaluated> lookup(const ParamSpec& spec, const ParamLevels& levels,
                                std::string_view name, double t);

}  // namespace deltaedit::merge
