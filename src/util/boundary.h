// The I/O boundary: every error leaving a reader of a file names that file (and the tensor or
// key when known), whatever raised it — our own checks, nlohmann::json or the standard library.
#pragma once
#include <filesystem>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>

#include "util/error.h"

namespace deltaedit::util {

// `e` with `file` (and `tensor`) filled in when it named no file.
inline Error in_context(const Error& e, const std::string& file, const std::string& tensor = {}) {
  if (!e.file().empty()) return e;
  return Error(e.kind(), e.detail(), file, e.tensor().empty() ? tensor : e.tensor());
}

// Runs `f` (which reads `file`) so that what it throws names the file: deltaedit errors gain the
// file and tensor they lack; malformed JSON (a missing key, a value of the wrong type) and other
// standard exceptions become Format errors; filesystem errors become Io errors. Internal and
// Interrupted errors and std::bad_alloc pass through unchanged (apart from the file).
template <class F>
auto at_boundary(const std::string& file, const std::string& tensor, F&& f) -> decltype(f()) {
  try {
    return std::forward<F>(f)();
  } catch (const Error& e) {
    throw in_context(e, file, tensor);
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::Format, std::string("malformed JSON: ") + e.what(), file, tensor);
  } catch (const std::filesystem::filesystem_error& e) {
    throw Error(ErrorKind::Io, e.code().message(), file, tensor);
  } catch (const std::exception& e) {
    throw Error(ErrorKind::Format, e.what(), file, tensor);
  }
}

}  // namespace deltaedit::util
