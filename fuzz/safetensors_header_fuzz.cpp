// Fuzzes the safetensors header parser with the input as a whole file image. A typed
// deltaedit::Error is the expected way to refuse; anything else (another exception, a crash, a
// sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <span>

#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const deltaedit::io::Header h = deltaedit::io::parse_header(bytes, size, "fuzz.safetensors");
    // An accepted header must describe exactly the bytes that are there.
    uint64_t end = 0;
    for (const auto& t : h.tensors) {
      if (t.begin != end || t.end < t.begin) __builtin_trap();
      end = t.end;
    }
    if (h.data_offset() + end != size) __builtin_trap();
  } catch (const deltaedit::Error&) {
  }
  return 0;
}
