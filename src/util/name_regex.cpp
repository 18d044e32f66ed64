#define PCRE2_CODE_UNIT_WIDTH 8
#include "util/name_regex.h"

#include <pcre2.h>

#include "util/error.h"

namespace deltaedit::util {

struct NameRegex::Code {
  pcre2_code* re = nullptr;
  ~Code() { pcre2_code_free(re); }
};

NameRegex::NameRegex(const std::string& pattern, const std::string& what) : pattern_(pattern) {
  if (pattern.empty()) return;
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF, &err,
                                 &off, nullptr);
  if (!re) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof buf);
    throw Error(ErrorKind::Usage, what + " pattern '" + pattern + "' does not compile at offset " +
                                      std::to_string(off) + ": " + reinterpret_cast<const char*>(buf));
  }
  code_ = std::make_shared<Code>();
  code_->re = re;
}

bool NameRegex::search(std::string_view name) const {
  if (!code_) return true;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->re, nullptr);
  int rc = pcre2_match(code_->re, reinterpret_cast<PCRE2_SPTR>(name.data()), name.size(), 0, 0, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

}  // namespace deltaedit::util
