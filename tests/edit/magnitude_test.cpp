// magnitude: exactly ⌊(1−p)·n⌋ entries kept per scope, the largest |Δ|, ties by lower index.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>

#include "edit_test_util.h"

namespace deltaedit::edit {
namespace {
using namespace edit_test;

double order_key(float x) { return std::fabs(double(x)); }

// Reference by full sort on (|Δ| descending, NaN first; index ascending).
std::vector<float> reference(const std::vector<float>& d, int64_t keep) {
  std::vector<size_t> idx(d.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) {
    const bool na = std::isnan(d[a]), nb = std::isnan(d[b]);
    if (na != nb) return na;
    return !na && order_key(d[a]) > order_key(d[b]);
  });
  std::vector<float> out(d.size(), 0.0f);
  for (int64_t t = 0; t < keep; ++t) out[idx[t]] = d[idx[t]];
  return out;
}

// Values on a coarse grid so that many magnitudes tie.
std::vector<float> tied_delta(size_t n, uint64_t seed) {
  std::vector<float> d = gaussian(n, seed, 3.0);
  for (float& v : d) v = std::round(v);
  return d;
}

TEST(Magnitude, KeepsExactlyFloorCount) {
  for (size_t n : {1u, 7u, 10u, 100u, 1001u, 65537u}) {
    for (double p : {0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0}) {
      const std::vector<float> d = tied_delta(n, n);
      const std::vector<float> out = edited("magnitude:p=" + std::to_string(p), d);
      const int64_t keep = static_cast<int64_t>(std::floor((1 - p) * n + 1e-9));
      EXPECT_EQ(out, reference(d, keep)) << "n=" << n << " p=" << p;
    }
  }
}

// Scopes of 65536 entries and more select by radix select (histograms of the key bits), shorter
// ones by nth_element: both must give the reference's exact top-keep, ties and NaN/Inf included.
TEST(Magnitude, RadixSelectMatchesReference) {
  for (size_t n : {65535u, 65536u, 200003u}) {
    std::vector<float> d = tied_delta(n, n + 1);
    // Keys spread over many high bins, and values that share the high 16 bits but not the low ones.
    for (size_t i = 0; i < n; i += 7)
      d[i] = std::ldexp(1.0f + float(i % 97) / 128.0f, int(i % 40) - 20);
    for (size_t i = 3; i < n; i += 1001) d[i] = (i % 2) ? NAN : -INFINITY;
    for (double p : {0.0, 0.5, 0.9, 0.999, 0.99999}) {
      const int64_t keep = static_cast<int64_t>(std::floor((1 - p) * double(n) + 1e-9));
      const std::vector<float> out = edited("magnitude:p=" + std::to_string(p), d);
      const std::vector<float> ref = reference(d, keep);
      ASSERT_TRUE(same_bytes(out, ref)) << "n=" << n << " p=" << p;
    }
  }
  // Row scope with long rows (radix) on a 3 × 70000 tensor.
  const int64_t rows = 3, cols = 70000;
  const std::vector<float> d = tied_delta(rows * cols, 11);
  const std::vector<float> out = edited("magnitude:scope=row,p=0.75", d, {rows, cols});
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<float> row(d.begin() + r * cols, d.begin() + (r + 1) * cols);
    EXPECT_EQ(std::vector<float>(out.begin() + r * cols, out.begin() + (r + 1) * cols),
              reference(row, cols / 4));
  }
}

TEST(Magnitude, DecimalParametersAsWritten) {
  // ⌊(1−0.9)·10⌋ = 1 although (1−0.9)·10 = 0.9999999999999998 in binary.
  std::vector<float> d = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const std::vector<float> out = edited("magnitude:p=0.9", d);
  EXPECT_EQ(std::count_if(out.begin(), out.end(), [](float v) { return v != 0; }), 1);
  EXPECT_EQ(out[9], 10.0f);
}

TEST(Magnitude, TiesBrokenByLowerIndex) {
  const std::vector<float> d = {3, -1, 1, -1, 2, 1};
  EXPECT_EQ(edited("magnitude:p=0.5", d), (std::vector<float>{3, -1, 0, 0, 2, 0}));
  const std::vector<float> all_equal(10, -0.5f);
  const std::vector<float> out = edited("magnitude:p=0.7", all_equal);
  EXPECT_EQ(out, (std::vector<float>{-0.5f, -0.5f, -0.5f, 0, 0, 0, 0, 0, 0, 0}));
}

TEST(Magnitude, RowScope) {
  const int64_t rows = 13, cols = 37;
  const std::vector<float> d = tied_delta(rows * cols, 5);
  for (double p : {0.2, 0.5, 0.9}) {
    const std::vector<float> out =
        edited("magnitude:scope=row,p=" + std::to_string(p), d, {rows, cols});
    const int64_t keep = static_cast<int64_t>(std::floor((1 - p) * cols + 1e-9));
    for (int64_t r = 0; r < rows; ++r) {
      const std::vector<float> row(d.begin() + r * cols, d.begin() + (r + 1) * cols);
      const std::vector<float> got(out.begin() + r * cols, out.begin() + (r + 1) * cols);
      EXPECT_EQ(got, reference(row, keep)) << "row " << r << " p=" << p;
    }
  }
  // Row scope on a 3-D tensor: rows = shape[0], cols = the rest.
  const std::vector<float> d3 = tied_delta(4 * 3 * 5, 6);
  const std::vector<float> out3 = edited("magnitude:scope=row,p=0.5", d3, {4, 3, 5});
  for (int64_t r = 0; r < 4; ++r) {
    const std::vector<float> row(d3.begin() + r * 15, d3.begin() + (r + 1) * 15);
    EXPECT_EQ(std::vector<float>(out3.begin() + r * 15, out3.begin() + (r + 1) * 15),
              reference(row, 7));
  }
  // A 1-D tensor is one row.
  const std::vector<float> d1 = tied_delta(50, 7);
  EXPECT_EQ(edited("magnitude:scope=row,p=0.5", d1, {50}), edited("magnitude:p=0.5", d1, {50}));
}

TEST(Magnitude, EdgeCases) {
  const std::vector<float> d = gaussian(1000, 8);
  EXPECT_TRUE(same_bytes(edited("magnitude:p=0", d), d));
  for (float v : edited("magnitude:p=1", d)) EXPECT_EQ(v, 0.0f);
  // NaN ranks above every finite value (kept, stays visible); the result is still exact in count.
  std::vector<float> n = {1.0f, NAN, 2.0f, -INFINITY, 0.5f, 3.0f};
  const std::vector<float> out = edited("magnitude:p=0.5", n);
  EXPECT_TRUE(std::isnan(out[1]));
  EXPECT_EQ(out[3], -INFINITY);
  EXPECT_EQ(out[5], 3.0f);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[4], 0.0f);
}

// The streaming form (scope=tensor, a multi-pass op): observe passes over pieces until the op
// has what it needs, then edit the pieces. Returns the edited values and the number of passes.
std::pair<std::vector<float>, int> streamed(const std::string& spec, std::vector<float> x,
                                            size_t piece) {
  const auto owned = op(spec);
  EXPECT_TRUE(owned->observes()) << spec;
  const ObservingOp* o = as_observing(*owned);
  EXPECT_TRUE(o != nullptr && o->multi_pass()) << spec;
  const std::vector<int64_t> shape{int64_t(x.size())};
  TensorContext ctx;
  ctx.name = "t";
  ctx.shape = shape;
  auto st = o->observe_begin(ctx);
  int passes = 0;
  do {
    ++passes;
    for (size_t at = 0; at < x.size(); at += piece)
      o->observe(*st, std::span<const float>(x.data() + at, std::min(piece, x.size() - at)), at);
  } while (o->observe_again(*st) && passes < 10);
  o->observe_end(*st);
  for (size_t at = 0; at < x.size(); at += piece)
    o->apply_observed(*st, std::span<float>(x.data() + at, std::min(piece, x.size() - at)), at,
                      ctx);
  return {std::move(x), passes};
}

// Streamed selection equals the full-sort reference on: one key per high bin with ties cut
// (grid values: two passes), several keys in the threshold's bin (positions collected in the
// low-bits pass: two passes), more keys in that bin than positions kept (a third pass finds the
// cut among the ties), NaN/±Inf, and edge fractions; any cut into pieces.
TEST(Magnitude, StreamedMatchesReference) {
  const size_t n = 200003;
  std::vector<float> grid = tied_delta(n, 31);
  std::vector<float> spread = grid;
  for (size_t i = 0; i < n; i += 3)
    spread[i] = std::ldexp(1.0f + float(i % 997) / 1024.0f, int(i % 9) - 4);
  for (size_t i = 5; i < n; i += 1009) spread[i] = (i % 2) ? NAN : -INFINITY;
  for (const auto* d : {&grid, &spread}) {
    for (double p : {0.0, 0.3, 0.9, 0.999, 0.99999, 1.0}) {
      const int64_t keep = static_cast<int64_t>(std::floor((1 - p) * double(n) + 1e-9));
      const std::vector<float> ref = reference(*d, keep);
      for (size_t piece : {size_t(4096), size_t(777)}) {
        const auto [out, passes] = streamed("magnitude:p=" + std::to_string(p), *d, piece);
        ASSERT_TRUE(same_bytes(out, ref)) << "p=" << p << " piece " << piece;
        EXPECT_LE(passes, 2) << "p=" << p;
      }
    }
  }
  // 2^20 keys in one high bin (1 + k/2^16·2^-7 for k < 2^16 shares the high 16 bits of 1.0f),
  // each key 16 times, so the threshold ties (keep is no multiple of 16) and the bin holds more
  // keys than the positions kept.
  std::vector<float> crowded(size_t{1} << 20);
  for (size_t i = 0; i < crowded.size(); ++i) {
    uint32_t b = 0x3F800000u | static_cast<uint32_t>((i * 40503u) % 65536u);
    std::memcpy(&crowded[i], &b, sizeof b);
  }
  for (double p : {0.7, 0.9}) {
    const int64_t keep = static_cast<int64_t>(std::floor((1 - p) * double(crowded.size()) + 1e-9));
    ASSERT_NE(keep % 16, 0);
    const auto [out, passes] = streamed("magnitude:p=" + std::to_string(p), crowded, 65536);
    ASSERT_TRUE(same_bytes(out, reference(crowded, keep))) << "p=" << p;
    EXPECT_EQ(passes, 3);
  }
  // Scope=row does not stream.
  EXPECT_EQ(op("magnitude:scope=row")->kind(), ExecKind::WholeTensor);
}

// A tensor of ≥ 2^22 entries: the High pass guesses T's bin from the first 2^20 keys and keeps
// the keys near it with their positions; when T's bin is among them, the Low pass reads nothing
// (one pass in all), and when the guess misses, the Low pass reads the inputs (two passes). The
// bytes are those of the full-sort reference either way.
TEST(Magnitude, StreamedWindowSkipsTheSecondReadWhenItHoldsTheThreshold) {
  const size_t n = (size_t{1} << 22) + 12345;
  const std::vector<float> gauss = gaussian(n, 41);
  // On a grid of 2^-19: a few distinct keys per high bin, many entries each, so T ties and its
  // cut comes from the window's positions.
  std::vector<float> grid = gauss;
  for (float& v : grid) v = std::round(v * 524288.0f) / 524288.0f;
  // The first 2^20 entries 64 times larger than the rest: the prefix's guess misses.
  std::vector<float> skewed = gauss;
  for (size_t i = 0; i < (size_t{1} << 20); ++i) skewed[i] *= 64.0f;
  struct Case {
    const std::vector<float>* d;
    double p;
    int passes;
  };
  for (const Case& c :
       {Case{&gauss, 0.9, 1}, Case{&grid, 0.9, 1}, Case{&grid, 0.5, 1}, Case{&skewed, 0.9, 2}}) {
    const int64_t keep = static_cast<int64_t>(std::floor((1 - c.p) * double(n) + 1e-9));
    const std::vector<float> ref = reference(*c.d, keep);
    for (size_t piece : {size_t(4096), size_t(100003)}) {
      const auto [out, passes] = streamed("magnitude:p=" + std::to_string(c.p), *c.d, piece);
      ASSERT_TRUE(same_bytes(out, ref)) << "p=" << c.p << " piece " << piece;
      EXPECT_EQ(passes, c.passes) << "p=" << c.p << " piece " << piece;
    }
  }
}

}  // namespace
}  // namespace deltaedit::edit
