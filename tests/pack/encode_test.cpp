// pack::encode_delta's palettes: exactly up to 256 distinct values (the set is a hash now), the
// round trip through decode is bit-exact, and a large tensor encodes in one pass.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "pack/pack.h"

using namespace deltaedit;

namespace {

// `n` values cycling over `k` distinct patterns of both signs and many exponents (the patterns
// differ in their sign and high bits, as BitDelta's ±scale do), with every `zero_every`-th zero.
std::vector<float> values(size_t n, size_t k, size_t zero_every = 0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const size_t j = (i * 7919) % k;
    const float x = float(j / 2 + 1) * (j % 2 ? -1.0f : 1.0f) * (j % 3 ? 0.001f : 1024.0f);
    v[i] = zero_every && i % zero_every == 0 ? 0.0f : x;
  }
  return v;
}

pack::Encoded encode(const std::vector<float>& v, std::vector<int64_t> shape) {
  std::vector<std::byte> out(v.size() * 4);
  std::memcpy(out.data(), v.data(), out.size());
  return pack::encode_delta(v, shape, out, std::nullopt);
}

std::vector<float> decoded(const pack::Encoded& e, size_t n) {
  auto get = [&](const std::string& suffix) -> std::span<const std::byte> {
    for (const auto& p : e.parts)
      if (p.suffix == suffix) return p.bytes;
    return {};
  };
  std::vector<float> edited(n);
  std::vector<std::byte> out(n * 4);
  pack::decode(e.encoding, e.params, get, edited, out);
  return edited;
}

}  // namespace

TEST(PackEncode, PaletteHoldsExactly256DistinctValues) {
  const size_t n = 8192;  // 1 row: no per-row palette
  auto v256 = values(n, 256);
  auto e = encode(v256, {int64_t(n)});
  EXPECT_EQ(e.encoding, "palette");
  EXPECT_EQ(e.params.value("bits", 0), 8);
  EXPECT_EQ(std::memcmp(decoded(e, n).data(), v256.data(), n * 4), 0);
  auto v257 = values(n, 257);
  auto e2 = encode(v257, {int64_t(n)});
  EXPECT_NE(e2.encoding, "palette") << "257 distinct values cannot be 8-bit codes";
  EXPECT_TRUE(e2.encoding == "out" || e2.encoding == "dense") << e2.encoding;  // stored whole
}

TEST(PackEncode, SparsePaletteCountsNonZeroValuesOnly) {
  const size_t n = 1 << 16;
  // 256 non-zero values and zeros on 7 of 8 entries: zero does not take a palette slot.
  const std::vector<float> nz = values(n / 8, 256);
  std::vector<float> v(n, 0.0f);
  for (size_t i = 0; i < n / 8; ++i) v[8 * i] = nz[i];
  auto e = encode(v, {int64_t(n)});
  EXPECT_EQ(e.encoding, "sparse_palette");
  EXPECT_EQ(e.params.value("bits", 0), 8);
  EXPECT_EQ(std::memcmp(decoded(e, n).data(), v.data(), n * 4), 0);
}

TEST(PackEncode, SignedZeroAndNaNPatternsAreDistinctValues) {
  std::vector<float> v(4096, 0.5f);
  v[1] = -0.0f;  // differs from +0 in its bit pattern: the palette keeps it exactly
  v[2] = std::numeric_limits<float>::quiet_NaN();
  v[3] = -0.5f;
  auto e = encode(v, {int64_t(v.size())});
  EXPECT_EQ(e.encoding, "palette");
  EXPECT_EQ(e.params.value("bits", 0), 2);
  EXPECT_EQ(std::memcmp(decoded(e, v.size()).data(), v.data(), v.size() * 4), 0);
}

// A tensor with exactly 256 distinct values, the most a palette holds: 8-bit codes that decode
// to the same bytes (the distinct-value scan's cost is measured in bench/, not here).
TEST(PackEncode, FullPaletteTensorEncodesAndDecodesExactly) {
  const size_t n = size_t(1) << 20;
  auto v = values(n, 256);
  auto e = encode(v, {1024, 1024});
  EXPECT_EQ(e.encoding, "palette");
  EXPECT_EQ(e.params.value("bits", 0), 8);
  EXPECT_EQ(std::memcmp(decoded(e, v.size()).data(), v.data(), v.size() * 4), 0);
}
