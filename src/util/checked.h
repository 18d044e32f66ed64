// Checked size arithmetic for values read from files (shapes, byte counts, planned sizes): an
// overflow is a Format error naming the file and tensor, never a wrapped size.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "util/error.h"

namespace deltaedit::util {

// a·b, or Error(Format) "<what> overflows 64 bits".
inline uint64_t checked_mul(uint64_t a, uint64_t b, const char* what, const std::string& file = {},
                            const std::string& tensor = {}) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r))
    throw Error(ErrorKind::Format, std::string(what) + " overflows 64 bits", file, tensor);
  return r;
}

// a + b, or Error(Format) "<what> overflows 64 bits".
inline uint64_t checked_add(uint64_t a, uint64_t b, const char* what, const std::string& file = {},
                            const std::string& tensor = {}) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r))
    throw Error(ErrorKind::Format, std::string(what) + " overflows 64 bits", file, tensor);
  return r;
}

// The element count of a shape; a negative dimension or an overflowing product is Format.
inline uint64_t checked_numel(std::span<const int64_t> shape, const std::string& file = {},
                              const std::string& tensor = {}) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(ErrorKind::Format, "negative dimension in shape", file, tensor);
    n = checked_mul(n, uint64_t(d), "shape product", file, tensor);
  }
  return n;
}

// Bytes of a tensor of `shape` with `bits` per element (whole bytes: bits·numel / 8).
inline uint64_t checked_nbytes(std::span<const int64_t> shape, uint64_t bits,
                               const std::string& file = {}, const std::string& tensor = {}) {
  return checked_mul(checked_numel(shape, file, tensor), bits, "tensor size", file, tensor) / 8;
}

}  // namespace deltaedit::util
