// Typed errors: every failure names what it is about (file, tensor) and what went wrong.
#pragma once
#include <stdexcept>
#include <string>

namespace deltaedit {

enum class ErrorKind {
  Io,          // open/read/write/fsync/rename failures, disk full
  Format,      // a file violates the safetensors/index/config rules
  Usage,       // bad command-line or op parameters (caught before any I/O)
  Unsupported, // valid input we do not handle (dtype math, architecture)
  Numeric,     // numeric problems that must not pass silently
  Interrupted, // SIGINT/SIGTERM during a write
  Internal,    // a broken invariant of deltaedit itself (a bug): never the user's input
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message, std::string file = {}, std::string tensor = {})
      : std::runtime_error(compose(kind, message, file, tensor)),
        kind_(kind), file_(std::move(file)), tensor_(std::move(tensor)), detail_(std::move(message)) {}
  ErrorKind kind() const noexcept { return kind_; }
  const std::string& file() const noexcept { return file_; }
  const std::string& tensor() const noexcept { return tensor_; }
  const std::string& detail() const noexcept { return detail_; }

 private:
  static std::string compose(ErrorKind k, const std::string& m, const std::string& f, const std::string& t) {
    std::string s = k == ErrorKind::Internal ? "internal error (a bug in deltaedit; please report it): " : "";
    if (!f.empty()) s += f + ": ";
    if (!t.empty()) s += "tensor '" + t + "': ";
    return s + m;
  }
  ErrorKind kind_;
  std::string file_, tensor_, detail_;
};

inline const char* to_string(ErrorKind k) {
  switch (k) {
    case ErrorKind::Io: return "io";
    case ErrorKind::Format: return "format";
    case ErrorKind::Usage: return "usage";
    case ErrorKind::Unsupported: return "unsupported";
    case ErrorKind::Numeric: return "numeric";
    case ErrorKind::Interrupted: return "interrupted";
    case ErrorKind::Internal: return "internal";
  }
  return "unknown";
}

}  // namespace deltaedit
