// Fuzzes adapter_config.json parsing (PEFT LoRA) and the pattern matching it compiles.
// deltaedit::Error is the expected refusal; anything else (a crash, a sanitizer report, an
// accepted config that breaks an invariant) is a bug.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "io/peft.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const deltaedit::io::LoraConfig c =
        deltaedit::io::parse_adapter_config(text, "fuzz/adapter_config.json");
    if (c.r <= 0 || !std::isfinite(c.lora_alpha)) __builtin_trap();
    if (c.rank_pattern.size() != c.rank_re.size() || c.alpha_pattern.size() != c.alpha_re.size())
      __builtin_trap();
    for (const std::string name :
         {"model.layers.0.self_attn.q_proj", "lm_head", "", "a.b.c.d.e.f.g.h.i.j.k"}) {
      if (c.rank_for(name) <= 0) __builtin_trap();
      if (!std::isfinite(c.alpha_for(name))) __builtin_trap();
      (void)c.targets(name);
      (void)c.saves(name);
    }
  } catch (const deltaedit::Error&) {
  }
  return 0;
}
