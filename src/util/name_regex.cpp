#include "util/name_regex.h"

#include "util/error.h"

namespace deltaedit::util {

NameRegex::NameRegex(const std::string& pattern, const std::string& what) : pattern_(pattern) {
  if (pattern.empty()) return;
  RegexCompileError err;
  std::optional<Regex> re = Regex::compile(pattern, RegexOptions{}, err);
  if (!re)
    throw Error(ErrorKind::Usage, what + " pattern '" + pattern + "' does not compile at offset " +
                                      std::to_string(err.offset) + ": " + err.reason);
  re_ = std::move(*re);
}

bool NameRegex::search(std::string_view name) const {
  if (re_.empty()) return true;
  return re_.match(name).found();
}

}  // namespace deltaedit::util
