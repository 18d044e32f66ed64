// Philox4x32-10 known-answer vectors (Random123 kat_vectors) and the keyed streams.
#include "util/philox.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <thread>
#include <vector>

namespace deltaedit::util {
namespace {

TEST(Philox, KnownAnswerZero) {
  const PhiloxCounter out = philox4x32_10({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(out, (PhiloxCounter{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
}

TEST(Philox, KnownAnswerAllOnes) {
  const PhiloxCounter out = philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                          {0xffffffffu, 0xffffffffu});
  EXPECT_EQ(out, (PhiloxCounter{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
}

TEST(Philox, KnownAnswerPi) {
  const PhiloxCounter out = philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
                                          {0xa4093822u, 0x299f31d0u});
  EXPECT_EQ(out, (PhiloxCounter{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Philox, CompileTimeEvaluable) {
  static_assert(philox4x32_10({0, 0, 0, 0}, {0, 0})[0] == 0x6627e8d5u);
  static_assert(fnv1a64("") == 0xCBF29CE484222325ull);
  static_assert(fnv1a64("a") == 0xAF63DC4C8601EC8Cull);  // FNV-1a reference value
}

TEST(Philox, KeysDependOnEveryPart) {
  const PhiloxKey base = rng_key(42, "model.layers.0.mlp.up_proj.weight", 0);
  EXPECT_EQ(base, rng_key(42, "model.layers.0.mlp.up_proj.weight", 0));
  EXPECT_NE(base, rng_key(43, "model.layers.0.mlp.up_proj.weight", 0));
  EXPECT_NE(base, rng_key(42, "model.layers.1.mlp.up_proj.weight", 0));
  EXPECT_NE(base, rng_key(42, "model.layers.0.mlp.up_proj.weight", 1));
  std::set<PhiloxKey> keys;
  for (uint32_t op = 0; op < 100; ++op) {
    for (uint64_t seed = 0; seed < 100; ++seed) keys.insert(rng_key(seed, "w", op));
  }
  EXPECT_EQ(keys.size(), 10000u);
}

TEST(Philox, UniformRangeAndMoments) {
  const KeyedRng rng(7, "t", 3);
  const int n = 200000;
  double sum = 0, sumf = 0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform(i);
    const float uf = rng.uniform_float(i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    ASSERT_GE(uf, 0.0f);
    ASSERT_LT(uf, 1.0f);
    sum += u;
    sumf += uf;
  }
  // Mean of U(0,1): sd of the sample mean = sqrt(1/12/n) ≈ 6.5e-4; 5 sd bound.
  EXPECT_NEAR(sum / n, 0.5, 5 * std::sqrt(1.0 / 12 / n));
  EXPECT_NEAR(sumf / n, 0.5, 5 * std::sqrt(1.0 / 12 / n));
}

TEST(Philox, NormalMoments) {
  const KeyedRng rng(11, "t", 0);
  const int n = 200000;
  double s1 = 0, s2 = 0;
  for (int i = 0; i < n; ++i) {
    const double z = rng.normal(i);
    ASSERT_TRUE(std::isfinite(z));
    s1 += z;
    s2 += z * z;
  }
  // Sample mean sd = 1/sqrt(n); sample second moment sd = sqrt(2/n).
  EXPECT_NEAR(s1 / n, 0.0, 5 / std::sqrt(double(n)));
  EXPECT_NEAR(s2 / n, 1.0, 5 * std::sqrt(2.0 / n));
}

TEST(Philox, BelowIsInRangeAndCoversAll) {
  const KeyedRng rng(1, "x", 0);
  int counts[7] = {};
  for (int i = 0; i < 70000; ++i) {
    const uint64_t v = rng.below(i, 7);
    ASSERT_LT(v, 7u);
    ++counts[v];
  }
  // Each count ~ Binomial(70000, 1/7): mean 10000, sd ≈ 92.6; 5 sd bound.
  for (int c : counts) EXPECT_NEAR(c, 10000, 5 * 92.6);
  EXPECT_EQ(rng.below(5, 1), 0u);
}

// A draw is Philox4x32-10 (checked against the Random123 answers above) of the documented
// counter {i low, i high, lane, 0} under the stream's key, and nothing else: the same whether it
// is the first draw or follows a million others, on another thread, from a generator rebuilt from
// the key, in any order; indices past 2^32 use the high counter word.
TEST(Philox, DrawsArePureFunctionsOfIndex) {
  const KeyedRng a(5, "w", 2);
  const std::vector<uint64_t> idx{0,
                                  1,
                                  2,
                                  999,
                                  (uint64_t{1} << 32) - 1,
                                  uint64_t{1} << 32,
                                  (uint64_t{1} << 32) + 1,
                                  (uint64_t{7} << 40) + 12345,
                                  ~uint64_t{0}};
  std::vector<PhiloxCounter> first;
  for (uint64_t i : idx)
    for (uint32_t lane : {0u, 1u, 0xFFFFFFFFu}) {
      const PhiloxCounter expect = philox4x32_10(
          {static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), lane, 0u}, a.key());
      EXPECT_EQ(a.words(i, lane), expect) << i << " " << lane;
      // uniform() is the top 53 bits of words 0 and 1, scaled by 2^-53.
      const uint64_t top53 = ((uint64_t{expect[0]} << 32) | expect[1]) >> 11;
      EXPECT_EQ(a.uniform(i, lane), std::ldexp(static_cast<double>(top53), -53)) << i;
      first.push_back(expect);
    }
  // After a million other draws, on another thread, from a rebuilt generator, in reverse order.
  volatile double sink = 0;
  for (uint64_t i = 0; i < 1000000; ++i) sink = sink + a.uniform(i * 31 + 7);
  std::vector<PhiloxCounter> again;
  std::thread th([&] {
    const KeyedRng b(a.key());
    for (size_t k = idx.size(); k-- > 0;)
      for (uint32_t lane : {0xFFFFFFFFu, 1u, 0u}) again.push_back(b.words(idx[k], lane));
  });
  th.join();
  std::reverse(again.begin(), again.end());
  EXPECT_EQ(again, first);
  // Neighbouring indices and lanes differ (the counter layout does not alias them).
  EXPECT_NE(a.words(0, 0), a.words(0, 1));
  EXPECT_NE(a.words(0, 0), a.words(1, 0));
  EXPECT_NE(a.words(uint64_t{1} << 32, 0), a.words(0, 1));
}

// Every kernel this CPU has, named in failure messages.
std::vector<PhiloxIsa> kernels() {
  std::vector<PhiloxIsa> v;
  for (const PhiloxIsa isa : {PhiloxIsa::Generic, PhiloxIsa::Avx2, PhiloxIsa::Avx512})
    if (philox_isa_available(isa)) v.push_back(isa);
  return v;
}

TEST(Philox, DefaultKernelIsTheWidestAvailable) {
  const std::vector<PhiloxIsa> v = kernels();
  ASSERT_FALSE(v.empty());
  EXPECT_EQ(v.front(), PhiloxIsa::Generic);
  EXPECT_EQ(philox_default_isa(), v.back());
}

// The batched kernels against the scalar generator, word for word: odd lengths (a partial
// step of every kernel: 16 counters for AVX2, 32 for AVX-512), starts just below a 2^32 boundary
// of the low counter word (the high word changes inside a step), other lanes, and thresholds at
// both ends and in between. The default entry points give the same words.
TEST(Philox, BatchedBlocksEqualScalar) {
  const KeyedRng rng(9, "model.layers.3.self_attn.q_proj.weight", 1);
  for (const PhiloxIsa isa : kernels()) {
    SCOPED_TRACE(philox_isa_name(isa));
    for (const uint64_t first : {uint64_t{0}, uint64_t{5}, (uint64_t{1} << 32) - 11,
                                 (uint64_t{1} << 32) - 40, (uint64_t{7} << 32) + 3}) {
      for (const uint32_t lane : {0u, 1u, 0xFFFFFFFFu}) {
        const size_t n = 32 * 5 + 16 + 13;
        std::vector<uint32_t> w0(n), w1(n), w2(n), w3(n);
        philox_blocks_on(isa, rng.key(), first, lane, n, w0.data(), w1.data(), w2.data(),
                         w3.data());
        for (size_t j = 0; j < n; ++j) {
          const PhiloxCounter c = rng.words(first + j, lane);
          ASSERT_EQ(c, (PhiloxCounter{w0[j], w1[j], w2[j], w3[j]}))
              << first << " " << lane << " " << j;
        }
        std::vector<uint32_t> v0(n), v1(n);
        philox_blocks_on(isa, rng.key(), first, lane, n, v0.data(), v1.data(), nullptr, nullptr);
        EXPECT_EQ(v0, w0);
        EXPECT_EQ(v1, w1);
        philox_blocks(rng.key(), first, lane, n, v0.data(), v1.data(), nullptr, nullptr);
        EXPECT_EQ(v0, w0);
        EXPECT_EQ(v1, w1);
      }
    }
  }
}

TEST(Philox, BernoulliSelectEqualsUniformComparison) {
  const KeyedRng rng(3, "w", 0);
  const size_t n = 32 * 20 + 16 + 7;
  std::vector<uint32_t> sel(n);
  for (const PhiloxIsa isa : kernels()) {
    SCOPED_TRACE(philox_isa_name(isa));
    for (const double p : {0.0, 1e-300, 0.1, 0.5, 0.9, 0.999999, 1.0 - 0x1.0p-53, 1.0}) {
      for (const uint64_t first : {uint64_t{0}, (uint64_t{1} << 32) - 100, (uint64_t{1} << 32) - 20,
                                   (uint64_t{3} << 40) + 1}) {
        bernoulli_select_on(isa, rng.key(), first, n, KeyedRng::uniform_threshold(p), sel.data());
        for (size_t j = 0; j < n; ++j) {
          ASSERT_EQ(sel[j], rng.uniform(first + j) < p ? ~0u : 0u) << p << " " << first << " " << j;
        }
      }
    }
    // A threshold equal to one element's own 53-bit word: that element is not below it, the
    // next value up selects it (the comparison is exact at the last bit), at every position of a
    // vector step.
    for (size_t j = 0; j < 64; ++j) {
      const PhiloxCounter c = rng.words(j);
      const uint64_t x = KeyedRng::uniform_bits(c[0], c[1]);
      uint32_t s[1];
      bernoulli_select_on(isa, rng.key(), j, 1, x, s);
      EXPECT_EQ(s[0], 0u);
      bernoulli_select_on(isa, rng.key(), j, 1, x + 1, s);
      EXPECT_EQ(s[0], ~0u);
      std::vector<uint32_t> many(64);
      for (size_t at = 0; at < 32; at += 7) {
        if (at > j) break;
        bernoulli_select_on(isa, rng.key(), j - at, 64, x, many.data());  // SIMD decides j
        EXPECT_EQ(many[at], 0u) << j << " " << at;
        bernoulli_select_on(isa, rng.key(), j - at, 64, x + 1, many.data());
        EXPECT_EQ(many[at], ~0u) << j << " " << at;
      }
    }
  }
}

// The lane-keyed entry (the merge methods' draws): every kernel against the scalar generator on
// lanes other than 0, where rounds 1 and 2 of the closed form carry M1·lane; across a 2^32
// boundary of the low counter word and at partial steps.
TEST(Philox, BernoulliOnAnyLaneEqualsUniformComparison) {
  const KeyedRng rng(11, "model.layers.0.mlp.up_proj.weight", 2);
  const size_t n = 32 * 9 + 16 + 5;
  std::vector<uint32_t> sel(n), dflt(n);
  for (const PhiloxIsa isa : kernels()) {
    SCOPED_TRACE(philox_isa_name(isa));
    for (const uint32_t lane : {0u, 1u, 0x4D470001u, 0x4D470002u, 0xFFFFFFFFu}) {
      for (const double p : {0.0, 0.1, 0.5, 0.9, 1.0}) {
        for (const uint64_t first :
             {uint64_t{0}, uint64_t{3}, (uint64_t{1} << 32) - 30, (uint64_t{5} << 33) + 7}) {
          const uint64_t t = KeyedRng::uniform_threshold(p);
          bernoulli_lane_on(isa, rng.key(), first, lane, n, t, sel.data());
          for (size_t j = 0; j < n; ++j) {
            ASSERT_EQ(sel[j], rng.uniform(first + j, lane) < p ? ~0u : 0u)
                << lane << " " << p << " " << first << " " << j;
          }
          bernoulli_lane(rng.key(), first, lane, n, t, dflt.data());
          EXPECT_EQ(dflt, sel);
        }
      }
    }
  }
}

}  // namespace
}  // namespace deltaedit::util
