// The one PCRE2 wrapper: a compiled pattern (always UTF mode), immutable after construction and
// safe to share between threads (copies share the compiled code). Callers turn compile and match
// failures into their own typed errors; nothing here throws on a bad pattern or subject.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace deltaedit::util {

struct RegexOptions {
  bool ucp = false;                // \w, \d, \s and POSIX classes use Unicode properties
  bool match_invalid_utf = false;  // invalid UTF-8 in a subject never matches (instead of an error)
  bool jit = false;                // JIT-compile when available (the interpreter otherwise)
  uint32_t match_limit = 0;        // backtracking limits; 0 keeps PCRE2's defaults
  uint32_t depth_limit = 0;
};

struct RegexCompileError {
  std::size_t offset = 0;  // in the pattern
  std::string reason;      // PCRE2's message
};

// Outcome of one match attempt.
struct RegexMatch {
  enum class Status { Found, NotFound, Failed };
  Status status = Status::NotFound;
  std::size_t begin = 0, end = 0;  // the matched bytes [begin, end) when Found
  std::string failure;             // PCRE2's message when Failed (e.g. a limit was hit)
  bool found() const { return status == Status::Found; }
};

class Regex {
 public:
  // An empty Regex holds no pattern; only compile() makes a usable one.
  Regex() = default;

  // Compiles `pattern`; nullopt (with `error` filled) when it does not compile.
  static std::optional<Regex> compile(std::string_view pattern, const RegexOptions& options,
                                      RegexCompileError& error);

  bool empty() const { return !code_; }

  // First match at or after byte `start` (anchored: only a match beginning exactly at `start`).
  RegexMatch match(std::string_view subject, std::size_t start = 0, bool anchored = false) const;

  // Appends the byte ranges of all non-overlapping, non-empty matches, left to right. After an
  // empty match the search resumes one UTF-8 character later. Returns PCRE2's message when an
  // attempt fails (ranges found before it stay appended), nullopt otherwise.
  std::optional<std::string> find_all(std::string_view subject,
                                      std::vector<std::pair<std::size_t, std::size_t>>& out) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
};

}  // namespace deltaedit::util
