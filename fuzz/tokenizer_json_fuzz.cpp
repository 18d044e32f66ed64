// libFuzzer target: a tokenizer.json from arbitrary bytes. Loading may fail with deltaedit::Error;
// a tokenizer that loads must encode and decode a fixed text without crashing.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view json(reinterpret_cast<const char*>(data), size);
  try {
    const auto tok = deltaedit::text::Tokenizer::from_json_string(json, "fuzz.json");
    static constexpr std::string_view kText =
        "Hello  world! It's 12345 \xC3\xA9t\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC "
        "\xF0\x9F\x9A\x80\n\t<s></s><|endoftext|> e\xCC\x81 ";
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok.encode(kText, special);
      (void)tok.decode(ids, false);
      (void)tok.decode(ids, true);
      for (int32_t id : ids)
        if (tok.id_to_token(id)) (void)tok.tokens(std::vector<int32_t>{id});
    }
    (void)tok.vocab_size();
    (void)tok.bos_id();
    (void)tok.eos_id();
  } catch (const deltaedit::Error&) {
    // Rejected input or text the tokenizer cannot handle: fine.
  }
  return 0;
}
