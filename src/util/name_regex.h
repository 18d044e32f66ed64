// Tensor-name patterns (PCRE2 syntax, unanchored search), compiled once and shared read-only.
#pragma once
#include <string>
#include <string_view>

#include "util/regex.h"

namespace deltaedit::util {

class NameRegex {
 public:
  NameRegex() = default;
  // Throws Error(Usage) naming `what` (e.g. "--include") when the pattern does not compile.
  NameRegex(const std::string& pattern, const std::string& what);
  bool empty() const { return re_.empty(); }
  bool search(std::string_view name) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex re_;
  std::string pattern_;
};

// include empty or matching, and exclude empty or not matching.
inline bool selected(const NameRegex& include, const NameRegex& exclude, std::string_view name) {
  return (include.empty() || include.search(name)) && (exclude.empty() || !exclude.search(name));
}

}  // namespace deltaedit::util
