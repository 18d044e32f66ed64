// Fuzzes the merge config parser (mergekit YAML, strict checks). deltaedit::Error is the expected
// refusal; any other exception, crash or sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "merge/config.h"
#include "merge/params.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool lenient : {false, true}) {
    try {
      const auto c = deltaedit::merge::parse_merge_config(text, "fuzz/merge.yaml", {lenient});
      if (!c.method) __builtin_trap();
      // Evaluate every parsed parameter at a few positions: gradients and condition lists.
      for (const auto& [name, v] : c.params)
        for (double t : {0.0, 0.3, 1.0})
          (void)deltaedit::merge::evaluate(v, "model.layers.0.mlp.up_proj.weight", t);
      for (const auto& m : c.models)
        for (const auto& [name, v] : m.params)
          (void)deltaedit::merge::evaluate(v, "lm_head.weight", 0.5);
    } catch (const deltaedit::Error&) {
    }
  }
  return 0;
}
