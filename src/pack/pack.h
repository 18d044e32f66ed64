// Delta packs (SPEC §6): per tensor, the smallest exact representation of the edited delta Δ',
// so that apply(base, pack) rebuilds, bit for bit, the checkpoint `edit` writes in full.
//
// A pack is a directory: pack.safetensors (components named "<tensor>::<part>"), deltaedit.json
// (provenance, the output layout and each tensor's encoding) and the post checkpoint's other
// files (config, tokenizer, ...), which the rebuilt checkpoint carries.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "linalg/lowrank.h"
#include "io/dtype.h"
#include "io/safetensors.h"

namespace deltaedit::pack {

inline constexpr const char* kPackFile = "pack.safetensors";
inline constexpr const char* kPackFormat = "deltaedit-pack/1";

// One encoded tensor: the parts to store and how to read them back.
struct Part {
  std::string suffix;  // "codes", "palette", "mask", "values", "u", "s", "v", "raw", "delta"
  io::DType dtype{};
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
struct Encoded {
  std::string encoding;  // raw | out | dense | palette | rowpalette | sparse | sparse_palette | lowrank
  nlohmann::json params; // e.g. {"bits": 2}
  std::vector<Part> parts;
  uint64_t stored_bytes() const;
};

// Chooses the smallest exact encoding of Δ' (f32) for a tensor whose output bytes are `out`
// (the output dtype's encoding of base + Δ'); `factors` is set when Δ' came from lowrank.
Encoded encode_delta(std::span<const float> edited, std::span<const int64_t> shape,
                     std::span<const std::byte> out, const std::optional<linalg::LowRankFactors>& factors);
// Encodes bytes kept verbatim (tensors not edited).
Encoded encode_raw(std::span<const std::byte> bytes, io::DType dtype, std::span<const int64_t> shape);

// Decoding: `get(suffix)` returns a part's bytes. Fills `edited` (Δ') for delta encodings and
// returns false; for raw/out encodings copies the final bytes into `out` and returns true.
using PartGetter = std::function<std::span<const std::byte>(const std::string& suffix)>;
bool decode(const std::string& encoding, const nlohmann::json& params, const PartGetter& get,
            std::span<float> edited, std::span<std::byte> out);

bool is_pack(const std::filesystem::path& p);
// What `inspect` shows of a pack: ops, seed, per-tensor encoding, bytes and bits per parameter.
nlohmann::json describe_pack(const std::filesystem::path& p);

}  // namespace deltaedit::pack
