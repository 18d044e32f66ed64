// pack::decode refuses malformed encoding entries and parts with typed Format errors (what a
// stranger's deltaedit.json or pack.safetensors can hold), and decodes well-formed ones.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "pack/pack.h"
#include "util/error.h"

using namespace deltaedit;
using nlohmann::json;

namespace {

std::vector<std::byte> f32_bytes(std::vector<float> v) {
  std::vector<std::byte> b(v.size() * 4);
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

ErrorKind decode_error(const std::string& enc, const json& params, std::vector<std::vector<std::byte>> parts, size_t n) {
  size_t next = 0;
  auto get = [&](const std::string&) -> std::span<const std::byte> {
    static const std::vector<std::byte> empty;
    return next < parts.size() ? std::span<const std::byte>(parts[next++]) : std::span<const std::byte>(empty);
  };
  std::vector<float> edited(n);
  std::vector<std::byte> out(n * 2);
  try {
    pack::decode(enc, params, get, edited, out);
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "decoded without an error";
  return ErrorKind::Io;
}

}  // namespace

TEST(PackDecode, LowRankRebuildsTheProduct) {
  std::vector<std::vector<std::byte>> parts{f32_bytes({1, 2}), f32_bytes({3}), f32_bytes({4, 5})};
  size_t next = 0;
  auto get = [&](const std::string&) -> std::span<const std::byte> { return parts[next++]; };
  std::vector<float> edited(4);
  std::vector<std::byte> out(8);
  EXPECT_FALSE(pack::decode("lowrank", {{"rank", 1}, {"rows", 2}, {"cols", 2}}, get, edited, out));
  EXPECT_EQ(edited, (std::vector<float>{12, 15, 24, 30}));  // u·s·vᵀ = [1,2]ᵀ·3·[4,5]
}

TEST(PackDecode, MissingOrMistypedParametersAreFormatErrors) {
  EXPECT_EQ(decode_error("palette", json::object(), {}, 4), ErrorKind::Format);
  EXPECT_EQ(decode_error("palette", {{"bits", "2"}}, {}, 4), ErrorKind::Format);
  EXPECT_EQ(decode_error("sparse_palette", {{"bits", 1.5}}, {std::vector<std::byte>(1)}, 4), ErrorKind::Format);
  EXPECT_EQ(decode_error("lowrank", {{"rank", 1}, {"rows", 2}}, {}, 4), ErrorKind::Format);
  EXPECT_EQ(decode_error("lowrank", json::array(), {}, 4), ErrorKind::Format);
}

TEST(PackDecode, OverflowingShapesAndRaggedPartsAreFormatErrors) {
  // rows·cols wraps to 4 in 64 bits: must not pass as a 4-element tensor.
  EXPECT_EQ(decode_error("lowrank", {{"rank", 1}, {"rows", int64_t(1) << 62}, {"cols", 4}}, {}, 0), ErrorKind::Format);
  EXPECT_EQ(decode_error("lowrank", {{"rank", 1}, {"rows", (int64_t(1) << 32) + 0}, {"cols", int64_t(1) << 32}}, {}, 0),
            ErrorKind::Format);
  // A palette of 5 bytes is not a whole number of F32 values.
  EXPECT_EQ(decode_error("palette", {{"bits", 1}}, {std::vector<std::byte>(1), std::vector<std::byte>(5)}, 4),
            ErrorKind::Format);
  EXPECT_EQ(decode_error("no-such-encoding", json::object(), {}, 4), ErrorKind::Format);
}
