// Fuzzes model.safetensors.index.json parsing. deltaedit::Error is the expected refusal.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/checkpoint.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const deltaedit::io::IndexFile idx = deltaedit::io::parse_index(text, "fuzz.index.json");
    // Every accepted shard name must pass the naming rule on its own.
    for (const auto& [tensor, file] : idx.weight_map) deltaedit::io::check_shard_name(file, "fuzz.index.json");
  } catch (const deltaedit::Error&) {
  }
  return 0;
}
