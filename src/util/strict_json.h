// Strict JSON parsing shared by every parser of a file a stranger may hand us (safetensors
// headers, index, config.json, tokenizer.json, packs): rejects duplicate keys at any level,
// nesting deeper than kMaxJsonDepth, NUL bytes, invalid UTF-8 and trailing non-whitespace.
// Every failure is Error(Format) naming the file.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace deltaedit::util {

inline constexpr int kMaxJsonDepth = 64;

// How a duplicate key is named in the error.
enum class DuplicateKeyNaming {
  // "duplicate JSON key 'k' in a.b[2].c": the key and the path of the object holding it.
  Path,
  // The top-level entry holding the duplicate is the error's tensor (safetensors headers and the
  // files read with them), and the message says "(nested)" below it.
  TopLevelEntry,
};

nlohmann::json parse_json_strict(std::string_view text, const std::string& file,
                                 DuplicateKeyNaming naming = DuplicateKeyNaming::Path);

}  // namespace deltaedit::util
