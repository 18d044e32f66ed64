// Fuzzes config.json parsing. deltaedit::Error is the expected refusal.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/config.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const deltaedit::io::ModelConfig c = deltaedit::io::parse_config(text, "fuzz/config.json");
    if (c.hidden_size < 0 || c.num_hidden_layers < 0 || c.vocab_size < 0 || c.head_dim < 0) __builtin_trap();
  } catch (const deltaedit::Error&) {
  }
  return 0;
}
