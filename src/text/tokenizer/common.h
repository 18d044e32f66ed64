// What the tokenizer's component families share: typed reads of tokenizer.json fields (every
// error names the file), the byte-level alphabet, and String/Regex patterns. Internal.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/tokenizer_detail.h"
#include "util/error.h"

namespace deltaedit::text::detail {

using nlohmann::json;

inline constexpr int64_t kMaxId = INT32_MAX / 2;
inline constexpr int kMaxNesting = 32;  // Sequence-in-Sequence depth accepted by the factories

using Ranges = std::vector<std::pair<std::size_t, std::size_t>>;

[[noreturn]] void fail(ErrorKind kind, const std::string& file, const std::string& msg);

// The string field "type" of a component object.
std::string type_of(const json& j, const std::string& file, const std::string& where);

std::string unsupported_msg(const std::string& where, const std::string& type,
                            const char* supported);

// An integer field in [lo, hi]; floats, strings and out-of-range values are rejected.
int64_t get_int(const json& v, const std::string& file, const std::string& what, int64_t lo,
                int64_t hi);

// A boolean field; absent or null gives `dflt`.
bool get_bool(const json& j, const char* key, bool dflt);

// Error(Format) when a Sequence nests deeper than kMaxNesting.
void check_depth(int depth, const std::string& file, const char* what);

// Byte <-> character mapping of byte-level BPE: printable bytes map to themselves, the others to
// U+0100 onwards in byte order.
struct ByteMap {
  std::array<std::string, 256> byte_to_str;
  std::array<int16_t, 512> char_to_byte;  // code point -> byte, -1 when not a byte character
  ByteMap();
};

// A pattern that is either a literal string or a regex (the {"String": ...} / {"Regex": ...}
// objects of tokenizer.json).
class Pattern {
 public:
  Pattern(const json& j, const std::string& file, const std::string& where);
  void find_all(std::string_view s, Ranges& out) const;
  std::string replace_all(std::string_view s, std::string_view content) const;

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
};

}  // namespace deltaedit::text::detail
