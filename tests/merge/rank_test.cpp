// The rank masks behind ties, breadcrumbs and sce (radix selection, no sort) against a stable
// sort written here, on keys with many duplicates and on keys that share their high halves.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include "merge/method_impl.h"
#include "merge_test_util.h"

using namespace deltaedit::merge::detail;

namespace {

std::vector<uint8_t> reference(const std::vector<uint32_t>& keys, uint64_t lo, uint64_t hi) {
  std::vector<size_t> order(keys.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return keys[a] < keys[b]; });
  std::vector<uint8_t> keep(keys.size(), 0);
  for (uint64_t r = lo; r < std::min<uint64_t>(hi, keys.size()); ++r) keep[order[r]] = 1;
  return keep;
}

}  // namespace

TEST(RankMask, KeepRankRangeIsTheStableSortRange) {
  std::mt19937_64 g(5);
  for (int trial = 0; trial < 300; ++trial) {
    const uint64_t n = 1 + g() % (trial < 200 ? 200 : 20000);
    std::vector<uint32_t> keys(n);
    const int kind = trial % 3;
    for (auto& k : keys) {
      if (kind == 0) k = uint32_t(g() % 7);  // heavy ties
      if (kind == 1)
        k = 0x3C000000u | uint32_t(g() % 5) << 16 | uint32_t(g() % 3);  // shared high halves
      if (kind == 2) k = uint32_t(g());                                 // full range
    }
    uint64_t lo = g() % (n + 1), hi = g() % (n + 2);
    if (trial % 10 == 0) lo = 0;
    if (trial % 10 == 1) hi = n;
    std::vector<uint8_t> keep(n, 7);
    keep_rank_range(keys, lo, hi, keep);
    ASSERT_EQ(keep, reference(keys, lo, hi))
        << "trial " << trial << " n " << n << " [" << lo << ", " << hi << ")";
  }
}

TEST(RankMask, KeyAtRankCountsTheKeysBelow) {
  std::mt19937_64 g(9);
  std::vector<uint32_t> keys(5000);
  for (auto& k : keys) k = uint32_t(g() % 300) << 12;
  std::vector<uint32_t> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  for (uint64_t r : {uint64_t{0}, uint64_t{1}, uint64_t{2499}, uint64_t{4999}}) {
    const RankCut c = key_at_rank(keys.size(), r, [&](uint64_t i) { return keys[i]; });
    EXPECT_EQ(c.value, sorted[r]) << r;
    EXPECT_EQ(c.below,
              uint64_t(std::lower_bound(sorted.begin(), sorted.end(), sorted[r]) - sorted.begin()))
        << r;
  }
}

// Forming τ_i in the models' own (scratch) value buffers gives the same bytes as separate buffers,
// for every task-vector method, and never touches the base.
TEST(TaskVectorScratch, WritableModelValuesGiveTheSameBytes) {
  using namespace deltaedit::merge;
  using namespace deltaedit::merge::test;
  const size_t n = 3000;
  for (const char* name : {"task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
                           "breadcrumbs_ties", "della", "della_linear"}) {
    for (WorkType work : {WorkType::F32, WorkType::BF16}) {
      Case c;
      c.shape = {30, 100};
      c.work = work;
      c.base = Model{to_bf16(gaussian(n, 1)), {}, 0};
      for (uint32_t m = 0; m < 3; ++m) {
        std::vector<float> x = gaussian(n, 10 + m, 0.1);
        for (size_t i = 0; i < n; ++i) x[i] += c.base->values[i];
        Params p{{"weight", 0.5 - 0.3 * m}, {"density", 0.5}};
        if (std::string(name).rfind("della", 0) == 0) p["epsilon"] = 0.1;
        c.models.push_back(Model{to_bf16(x), p, m + 1});
      }
      const Result want = run(name, c);
      TensorJob job = job_of(c);
      std::vector<std::vector<float>> scratch;
      for (const auto& m : c.models) scratch.push_back(m.values);
      for (size_t m = 0; m < scratch.size(); ++m) job.models[m].values = scratch[m];
      job.model_values_writable = true;
      const std::vector<float> base_before = c.base->values;
      std::vector<float> out(n);
      std::vector<std::string> warnings;
      method(name).merge(job, out, warnings);
      EXPECT_TRUE(same_bytes(out, want.out)) << name;
      EXPECT_TRUE(same_bytes(c.base->values, base_before)) << name;
    }
  }
}

// The branch-free bf16 rounding of the vectorised element loops gives io::f32_to_bf16's values
// bit for bit: every 2^-12-th bit pattern, the halfway cases around each bf16 step, ±0, ±Inf and
// NaNs of both signs with payloads.
TEST(Rounding, BranchFreeBf16EqualsTheConversion) {
  const auto same = [](uint32_t bits) {
    float x;
    std::memcpy(&x, &bits, 4);
    const float a = RoundBf16{}(x);
    const float b = deltaedit::io::bf16_to_f32(deltaedit::io::f32_to_bf16(x));
    uint32_t ab, bb;
    std::memcpy(&ab, &a, 4);
    std::memcpy(&bb, &b, 4);
    return ab == bb;
  };
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 4093) ASSERT_TRUE(same(uint32_t(b))) << b;
  for (uint32_t hi = 0; hi < 0x10000u; hi += 7) {
    for (const uint32_t lo : {0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, 0u}) {
      ASSERT_TRUE(same((hi << 16) | lo)) << hi << " " << lo;
    }
  }
  for (const uint32_t b : {0u, 0x80000000u, 0x7F800000u, 0xFF800000u, 0x7FC00000u, 0xFFC00001u,
                           0x7F800001u, 0xFF812345u, 0x7F7FFFFFu, 0x7F7F8000u})
    EXPECT_TRUE(same(b)) << b;
  EXPECT_EQ(RoundF32{}(1.2345f), 1.2345f);
}
