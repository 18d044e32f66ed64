// Fuzzes the decoding of a delta-pack tensor (pack::decode): the encoding entry of deltaedit.json
// and the part bytes of pack.safetensors, as `apply` reads them from a stranger's pack.
// Input: one line of JSON {"encoding": ..., "params": {...}, "n": elements, "out": output bytes},
// then the parts, each a 2-byte little-endian length and that many bytes, handed out in the order
// decode asks for them. deltaedit::Error is the expected refusal; anything else is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/safetensors.h"
#include "pack/pack.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nl = all.find('\n');
  if (nl == std::string_view::npos) return 0;
  nlohmann::json entry;
  try {
    entry = deltaedit::io::parse_json_strict(all.substr(0, nl), "fuzz.deltaedit.json");
  } catch (const deltaedit::Error&) {
    return 0;
  }
  // The harness's own framing (not under test): sizes bounded so one input stays fast.
  if (!entry.is_object() || !entry.contains("encoding") || !entry["encoding"].is_string()) return 0;
  const nlohmann::json params = entry.contains("params") ? entry["params"] : nlohmann::json::object();
  const uint64_t n = entry.contains("n") && entry["n"].is_number_unsigned() ? entry["n"].get<uint64_t>() : 0;
  const uint64_t out_bytes = entry.contains("out") && entry["out"].is_number_unsigned() ? entry["out"].get<uint64_t>() : 0;
  if (n > (1u << 14) || out_bytes > (1u << 16)) return 0;

  std::vector<std::vector<std::byte>> parts;
  size_t pos = nl + 1;
  while (pos + 2 <= size) {
    const size_t len = size_t(data[pos]) | size_t(data[pos + 1]) << 8;
    pos += 2;
    const size_t take = std::min(len, size - pos);
    parts.emplace_back(reinterpret_cast<const std::byte*>(data + pos), reinterpret_cast<const std::byte*>(data + pos + take));
    pos += take;
  }
  size_t next = 0;
  const std::vector<std::byte> empty;
  auto get = [&](const std::string&) -> std::span<const std::byte> {
    if (next >= parts.size()) return empty;
    return parts[next++];
  };
  std::vector<float> edited(n);
  std::vector<std::byte> out(out_bytes);
  try {
    deltaedit::pack::decode(entry["encoding"].get<std::string>(), params, get, edited, out);
  } catch (const deltaedit::Error&) {
  }
  return 0;
}
