// Small pieces shared by the experiment runners (sweep, merge sweep): grid values from a JSON
// config, point labels and file-safe point names.
#pragma once
#include <cctype>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace deltaedit::experiments {

// A number as a label: 4 significant digits, never "-0".
inline std::string grid_label(double v) {
  std::string s = fmt::format("{:.4g}", v);
  return s == "-0" ? "0" : s;
}

// j[key] as a non-empty list of numbers, or `def` when absent; `what` names the grid in errors.
inline std::vector<double> grid_values(const nlohmann::json& j, const char* key, std::vector<double> def,
                                       const char* what = "sweep grid") {
  if (!j.is_object() || !j.contains(key)) return def;
  const auto& v = j.at(key);
  if (!v.is_array() || v.empty())
    throw Error(ErrorKind::Usage, fmt::format("{} '{}' must be a non-empty list of numbers", what, key));
  std::vector<double> out;
  for (const auto& x : v) {
    if (!x.is_number()) throw Error(ErrorKind::Usage, fmt::format("{} '{}' holds a non-number", what, key));
    out.push_back(x.get<double>());
  }
  return out;
}

// A point id as a file name: anything but [A-Za-z0-9.=_-] becomes '_'.
inline std::string safe_name(std::string s) {
  for (auto& c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '=' || c == '_')) c = '_';
  return s;
}

}  // namespace deltaedit::experiments
