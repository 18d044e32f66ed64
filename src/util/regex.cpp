#include "util/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace deltaedit::util {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

// Length in bytes of the UTF-8 sequence with lead byte `b` (1 for a byte that is not a lead).
std::size_t utf8_len(unsigned char b) {
  if ((b & 0xE0) == 0xC0) return 2;
  if ((b & 0xF0) == 0xE0) return 3;
  if ((b & 0xF8) == 0xF0) return 4;
  return 1;
}

class MatchData {
 public:
  explicit MatchData(const pcre2_code* code)
      : md_(pcre2_match_data_create_from_pattern(code, nullptr)) {}
  ~MatchData() {
    if (md_) pcre2_match_data_free(md_);
  }
  MatchData(const MatchData&) = delete;
  MatchData& operator=(const MatchData&) = delete;
  pcre2_match_data* get() const { return md_; }

 private:
  pcre2_match_data* md_;
};

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  pcre2_match_context* mctx = nullptr;  // null: PCRE2's default limits
  Code() = default;
  Code(const Code&) = delete;
  Code& operator=(const Code&) = delete;
  ~Code() {
    if (mctx) pcre2_match_context_free(mctx);
    if (code) pcre2_code_free(code);
  }

  RegexMatch run(MatchData& m, std::string_view s, std::size_t start, bool anchored) const {
    RegexMatch r;
    if (!m.get()) {
      r.status = RegexMatch::Status::Failed;
      r.failure = "out of memory";
      return r;
    }
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start,
                               anchored ? PCRE2_ANCHORED : 0, m.get(), mctx);
    if (rc == PCRE2_ERROR_NOMATCH) return r;
    if (rc < 0) {
      r.status = RegexMatch::Status::Failed;
      r.failure = pcre2_message(rc);
      return r;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m.get());
    r.status = RegexMatch::Status::Found;
    r.begin = ov[0];
    r.end = ov[1];
    return r;
  }
};

std::optional<Regex> Regex::compile(std::string_view pattern, const RegexOptions& options,
                                    RegexCompileError& error) {
  uint32_t flags = PCRE2_UTF;
  if (options.ucp) flags |= PCRE2_UCP;
  if (options.match_invalid_utf) flags |= PCRE2_MATCH_INVALID_UTF;
  auto code = std::make_shared<Code>();
  int err = 0;
  PCRE2_SIZE err_off = 0;
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags,
                             &err, &err_off, nullptr);
  if (!code->code) {
    error.offset = err_off;
    error.reason = pcre2_message(err);
    return std::nullopt;
  }
  // JIT is an optimisation only; the interpreter runs when it is unavailable.
  if (options.jit) (void)pcre2_jit_compile(code->code, PCRE2_JIT_COMPLETE);
  if (options.match_limit || options.depth_limit) {
    code->mctx = pcre2_match_context_create(nullptr);
    if (!code->mctx) {
      error.offset = 0;
      error.reason = "out of memory creating the match context";
      return std::nullopt;
    }
    if (options.match_limit) pcre2_set_match_limit(code->mctx, options.match_limit);
    if (options.depth_limit) pcre2_set_depth_limit(code->mctx, options.depth_limit);
  }
  Regex r;
  r.code_ = std::move(code);
  return r;
}

RegexMatch Regex::match(std::string_view subject, std::size_t start, bool anchored) const {
  if (!code_) return {};
  MatchData m(code_->code);
  return code_->run(m, subject, start, anchored);
}

std::optional<std::string> Regex::find_all(
    std::string_view s, std::vector<std::pair<std::size_t, std::size_t>>& out) const {
  if (!code_) return std::nullopt;
  MatchData m(code_->code);
  std::size_t pos = 0;
  while (pos <= s.size()) {
    RegexMatch r = code_->run(m, s, pos, false);
    if (r.status == RegexMatch::Status::NotFound) break;
    if (r.status == RegexMatch::Status::Failed) return std::move(r.failure);
    if (r.end > r.begin) {
      out.emplace_back(r.begin, r.end);
      pos = r.end;
    } else {
      if (r.begin >= s.size()) break;
      pos = r.begin + utf8_len(static_cast<unsigned char>(s[r.begin]));
    }
  }
  return std::nullopt;
}

}  // namespace deltaedit::util
