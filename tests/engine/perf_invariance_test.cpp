// The streaming kernels: block/vector paths agree with the scalar definitions, accumulators do
// not depend on chunking or threads, edit statistics and outputs do not depend on threads, and the
// batched mask draw is the keyed stream it replaces.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "analysis/delta_stats.h"
#include "analysis/stats_runner.h"
#include "edit/op.h"
#include "engine/edit_engine.h"
#include "engine_test_util.h"
#include "io/checkpoint.h"
#include "io/convert.h"
#include "util/philox.h"
#include "util/reduce.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Gaussian values with a sprinkling of NaN, ±Inf, ±0 and huge values at random places.
std::vector<float> messy(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1e-2f);
  std::uniform_int_distribution<int> pick(0, 199);
  std::vector<float> v(n);
  for (auto& x : v) {
    switch (pick(g)) {
      case 0: x = kNaN; break;
      case 1: x = kInf; break;
      case 2: x = -kInf; break;
      case 3: x = 0.0f; break;
      case 4: x = -0.0f; break;
      case 5: x = 3.0e38f; break;
      default: x = d(g);
    }
  }
  return v;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

void expect_same(const analysis::DeltaAccum& x, const analysis::DeltaAccum& y) {
  const auto a = x.folded(), b = y.folded();
  EXPECT_EQ(a.n, b.n);
  EXPECT_EQ(a.positive, b.positive);
  EXPECT_EQ(a.zero, b.zero);
  EXPECT_EQ(a.nonfinite, b.nonfinite);
  EXPECT_TRUE(same_bits(a.sum, b.sum));
  EXPECT_TRUE(same_bits(a.sumsq, b.sumsq));
  EXPECT_TRUE(same_bits(a.sumabs, b.sumabs));
  EXPECT_TRUE(same_bits(a.maxabs, b.maxabs));
  EXPECT_TRUE(same_bits(a.base_sumsq, b.base_sumsq));
}

void expect_same(const analysis::EditAccum& x, const analysis::EditAccum& y) {
  const auto a = x.folded(), b = y.folded();
  EXPECT_EQ(a.n, b.n);
  EXPECT_EQ(a.sign_agree, b.sign_agree);
  EXPECT_EQ(a.nonzero_pairs, b.nonzero_pairs);
  EXPECT_EQ(a.nonfinite, b.nonfinite);
  EXPECT_TRUE(same_bits(a.delta_sumsq, b.delta_sumsq));
  EXPECT_TRUE(same_bits(a.edited_sumsq, b.edited_sumsq));
  EXPECT_TRUE(same_bits(a.d_sumsq, b.d_sumsq));
  EXPECT_TRUE(same_bits(a.dot, b.dot));
}

// Adds [0, n) in pieces of random sizes (including 0 and sizes that are not multiples of 4).
template <class Acc>
Acc add_in_pieces(const std::vector<float>& x, const std::vector<float>& y, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<size_t> len(0, 37);
  Acc a;
  size_t i = 0;
  while (i < x.size()) {
    const size_t m = std::min(len(g), x.size() - i);
    a.add(std::span(x.data() + i, m), std::span(y.data() + i, m));
    i += m;
  }
  return a;
}

}  // namespace

TEST(PerfInvariance, DeltaAccumDoesNotDependOnChunking) {
  const auto b = messy(10007, 1), p = messy(10007, 2);
  analysis::DeltaAccum whole;
  whole.add(b, p);
  for (uint32_t s : {3u, 4u, 5u}) expect_same(whole, add_in_pieces<analysis::DeltaAccum>(b, p, s));
}

// add_bf16 decodes in registers and takes a short path for all-finite blocks: bit-identical to
// add() on the decoded values, for any chunking and with NaN/Inf/±0 anywhere.
TEST(PerfInvariance, DeltaAccumBf16MatchesF32Path) {
  const auto bf = messy(20011, 31), pf = messy(20011, 32);
  std::vector<uint16_t> b16(bf.size()), p16(pf.size());
  std::vector<float> b(bf.size()), p(pf.size());
  for (size_t i = 0; i < bf.size(); ++i) {
    // Truncation to BF16 keeps NaN/Inf/±0 and gives values whose differences are often exactly 0.
    b16[i] = uint16_t(io::f32_to_bits(bf[i]) >> 16);
    p16[i] = (i % 5 == 0) ? b16[i] : uint16_t(io::f32_to_bits(pf[i]) >> 16);
    b[i] = io::bf16_to_f32(b16[i]);
    p[i] = io::bf16_to_f32(p16[i]);
  }
  analysis::DeltaAccum want;
  want.add(b, p);
  analysis::DeltaAccum whole;
  whole.add_bf16(b16, p16);
  expect_same(want, whole);
  for (uint32_t seed : {1u, 2u}) {
    std::mt19937 g(seed);
    std::uniform_int_distribution<size_t> len(0, 70);
    analysis::DeltaAccum a;
    size_t i = 0;
    while (i < b16.size()) {
      const size_t m = std::min(len(g), b16.size() - i);
      a.add_bf16(std::span(b16.data() + i, m), std::span(p16.data() + i, m));
      i += m;
    }
    expect_same(want, a);
  }
  // All finite: the short path only.
  std::vector<uint16_t> fb(4096), fp(4096);
  std::vector<float> ff(4096), fq(4096);
  std::mt19937 g(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (size_t i = 0; i < fb.size(); ++i) {
    fb[i] = uint16_t(io::f32_to_bits(d(g)) >> 16);
    fp[i] = i % 3 ? uint16_t(io::f32_to_bits(d(g)) >> 16) : fb[i];
    ff[i] = io::bf16_to_f32(fb[i]);
    fq[i] = io::bf16_to_f32(fp[i]);
  }
  analysis::DeltaAccum x, y;
  x.add(ff, fq);
  y.add_bf16(fb, fp);
  expect_same(x, y);
}

TEST(PerfInvariance, DeltaAccumMatchesItsDefinition) {
  // Counts exactly; sums to rounding; the fold of lanes is a permutation of the plain sums.
  const auto b = messy(4099, 7), p = messy(4099, 8);
  analysis::DeltaAccum a;
  a.add(b, p);
  const auto f = a.folded();
  uint64_t pos = 0, zer = 0, bad = 0;
  double s = 0, sq = 0, sa = 0, mx = 0, bsq = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const float d = p[i] - b[i];
    if (!std::isfinite(d) || !std::isfinite(b[i])) {
      ++bad;
      continue;
    }
    pos += d > 0;
    zer += d == 0;
    s += d;
    sq += double(d) * d;
    sa += std::fabs(double(d));
    mx = std::max(mx, std::fabs(double(d)));
    bsq += double(b[i]) * b[i];
  }
  EXPECT_EQ(f.n, b.size());
  EXPECT_EQ(f.positive, pos);
  EXPECT_EQ(f.zero, zer);
  EXPECT_EQ(f.nonfinite, bad);
  EXPECT_EQ(f.maxabs, mx);
  EXPECT_NEAR(f.sum, s, 1e-12 * sa);
  EXPECT_NEAR(f.sumsq, sq, 1e-12 * sq);
  EXPECT_NEAR(f.sumabs, sa, 1e-12 * sa);
  EXPECT_NEAR(f.base_sumsq, bsq, 1e-12 * bsq);
}

// The definition of EditAccum's order (SPEC §3: a fixed order): element i goes to lane i mod 4,
// each lane sums its elements in index order in f64 (non-finite pairs count as 0 and are
// counted), and the four lanes are added 0, 1, 2, 3. Every vector kernel (the AVX2 one, and the
// FMA short path for all-finite blocks of eight) must give these very bits.
static analysis::EditAccum edit_accum_by_definition(const std::vector<float>& d,
                                                    const std::vector<float>& e) {
  double dsq[4] = {}, esq[4] = {}, dd[4] = {}, dot[4] = {};
  analysis::EditAccum r;
  for (size_t i = 0; i < d.size(); ++i) {
    const size_t j = i % 4;
    const bool fin = std::isfinite(d[i]) && std::isfinite(e[i]);
    const double x = fin ? double(d[i]) : 0.0, y = fin ? double(e[i]) : 0.0;
    const double t = y - x;
    dsq[j] = dsq[j] + x * x;
    esq[j] = esq[j] + y * y;
    dd[j] = dd[j] + t * t;
    dot[j] = dot[j] + x * y;
    r.nonfinite += !fin;
    r.nonzero_pairs += x != 0.0;
    r.sign_agree += (x > 0 && y > 0) || (x < 0 && y < 0);
  }
  for (size_t j = 0; j < 4; ++j) {
    r.delta_sumsq += dsq[j];
    r.edited_sumsq += esq[j];
    r.d_sumsq += dd[j];
    r.dot += dot[j];
  }
  r.n = d.size();
  return r;
}

TEST(PerfInvariance, EditAccumIsItsDefinitionBitForBit) {
  // All finite (the short path throughout), finite with a rare NaN/Inf (short path and its
  // fallback in one run), and messy; lengths that leave a last group of four and a scalar tail;
  // values over a wide range of exponents so (y - x) is often inexact in f64.
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Exponents over a narrow range (terms of one size: the sums are sensitive to any change of
  // order or rounding) and over a wide one (y - x inexact in f64).
  for (int spread : {4, 60})
    for (size_t n : {size_t(4099), size_t(65536 + 12), size_t(20011)}) {
      std::uniform_int_distribution<int> ex(-spread, spread);
      std::vector<float> d(n), e(n);
      for (size_t i = 0; i < n; ++i) {
        d[i] = std::ldexp(nd(g), ex(g));
        e[i] = (i % 7 == 0) ? d[i] : (i % 11 == 0 ? -d[i] : std::ldexp(nd(g), ex(g)));
        if (i % 13 == 0) e[i] = 0.0f;
      }
      for (int variant = 0; variant < 3; ++variant) {
        auto dv = d, evv = e;
        if (variant == 1)
          for (size_t i = 97; i < n; i += 1009) dv[i] = (i % 2) ? kNaN : kInf;
        if (variant == 2) {
          dv = messy(n, uint32_t(n));
          evv = messy(n, uint32_t(n + 1));
        }
        analysis::EditAccum got;
        got.add(dv, evv);
        SCOPED_TRACE("spread=" + std::to_string(spread) + " n=" + std::to_string(n) +
                     " variant=" + std::to_string(variant));
        expect_same(edit_accum_by_definition(dv, evv), got);
      }
    }
}

TEST(PerfInvariance, EditAccumDoesNotDependOnChunking) {
  const auto d = messy(10007, 11), e = messy(10007, 12);
  analysis::EditAccum whole;
  whole.add(d, e);
  for (uint32_t s : {13u, 14u}) expect_same(whole, add_in_pieces<analysis::EditAccum>(d, e, s));
  // Definition: counts.
  uint64_t agree = 0, nz = 0, bad = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    if (!std::isfinite(d[i]) || !std::isfinite(e[i])) {
      ++bad;
      continue;
    }
    if (d[i] != 0) {
      ++nz;
      agree += (d[i] > 0 && e[i] > 0) || (d[i] < 0 && e[i] < 0);
    }
  }
  const auto f = whole.folded();
  EXPECT_EQ(f.nonfinite, bad);
  EXPECT_EQ(f.nonzero_pairs, nz);
  EXPECT_EQ(f.sign_agree, agree);
}

TEST(PerfInvariance, WideningConversionsMatchScalarAtEveryLength) {
  // Every 16-bit pattern, at offsets and lengths that exercise the vector body and the tail.
  std::vector<uint16_t> all(65536 + 21);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i * 40503u);
  for (size_t len : {size_t(1), size_t(15), size_t(16), size_t(17), size_t(100), all.size()}) {
    for (size_t start : {size_t(0), size_t(3)}) {
      if (start + len > all.size()) continue;
      const auto* bytes = reinterpret_cast<const std::byte*>(all.data() + start);
      std::vector<float> bf(len), hf(len);
      io::to_f32(std::span(bytes, len * 2), io::DType::BF16, bf);
      io::to_f32(std::span(bytes, len * 2), io::DType::F16, hf);
      for (size_t i = 0; i < len; ++i) {
        ASSERT_EQ(io::f32_to_bits(bf[i]), io::f32_to_bits(io::bf16_to_f32(all[start + i]))) << i;
        ASSERT_EQ(io::f32_to_bits(hf[i]), io::f32_to_bits(io::f16_to_f32(all[start + i]))) << i;
      }
    }
  }
}

TEST(PerfInvariance, NarrowingMatchesScalarWithSpecialsAnywhere) {
  for (size_t len : {size_t(5), size_t(64), size_t(65), size_t(1000), size_t(5000)}) {
    const auto x = messy(len, uint32_t(len));
    for (io::DType dt : {io::DType::BF16, io::DType::F32}) {
      const size_t sz = io::dtype_bits(dt) / 8;
      std::vector<std::byte> got(len * sz), want(len * sz);
      const auto s = io::from_f32(x, dt, got);
      io::NarrowStats r;
      for (size_t i = 0; i < len; ++i) {
        const float v = x[i];
        float back = v;
        if (dt == io::DType::BF16) {
          const uint16_t h = io::f32_to_bf16(v);
          std::memcpy(want.data() + 2 * i, &h, 2);
          back = io::bf16_to_f32(h);
        } else {
          std::memcpy(want.data() + 4 * i, &v, 4);
        }
        if (std::isnan(v)) ++r.nan;
        else if (std::isinf(v)) ++r.inf;
        else if (std::isinf(back)) ++r.overflow;
        else if (back == 0.0f && v != 0.0f) ++r.underflow;
      }
      EXPECT_EQ(got, want) << len;
      EXPECT_EQ(s.nan, r.nan);
      EXPECT_EQ(s.inf, r.inf);
      EXPECT_EQ(s.overflow, r.overflow);
      EXPECT_EQ(s.underflow, r.underflow);
    }
  }
}

TEST(PerfInvariance, BatchedPhiloxIsTheKeyedStream) {
  const util::KeyedRng rng(5, "model.layers.3.mlp.down_proj.weight", 2);
  for (uint64_t first : {uint64_t(0), uint64_t(13), (uint64_t(1) << 32) - 3, uint64_t(0xFFFFFFFFFFFFull)}) {
    for (uint32_t lane : {0u, 1u}) {
      uint32_t w0[util::kPhiloxBatch], w1[util::kPhiloxBatch];
      util::philox4x32_10_w01(rng.key(), first, lane, w0, w1);
      for (size_t j = 0; j < util::kPhiloxBatch; ++j) {
        const auto w = rng.words(first + j, lane);
        EXPECT_EQ(w0[j], w[0]);
        EXPECT_EQ(w1[j], w[1]);
        EXPECT_EQ(double(util::KeyedRng::uniform_bits(w0[j], w1[j])) * 0x1.0p-53, rng.uniform(first + j, lane));
      }
    }
  }
  // The integer threshold decides exactly as uniform(i) < p, including at the boundary.
  for (double p : {0.1, 0.5, 0.9, 1.0, 0x1.0p-53, 1.0 - 0x1.0p-53}) {
    const uint64_t t = util::KeyedRng::uniform_threshold(p);
    for (uint64_t x : {t - 1, t, t + 1}) {
      if (x >= (uint64_t(1) << 53)) continue;
      EXPECT_EQ(x < t, double(x) * 0x1.0p-53 < p) << p << " " << x;
    }
  }
}

TEST(PerfInvariance, DareAndDropMasksAreTheScalarDraws) {
  const size_t n = 100003;
  std::vector<float> ones(n, 1.0f);
  for (double p : {0.3, 0.9}) {
    const std::string ps = std::to_string(p);
    for (const std::string& spec : {"dare:p=" + ps + ",k=0", "drop:p=" + ps, "dare:p=" + ps + ",k=0,rescale=l1"}) {
      auto o = edit::make_op(edit::parse_op_spec(spec));
      edit::TensorContext ctx;
      ctx.name = "w";
      const std::vector<int64_t> shape{int64_t(n)};
      ctx.shape = shape;
      ctx.seed = 9;
      ctx.op_index = 1;
      std::vector<float> x = ones;
      o->apply(x, ctx);
      const util::KeyedRng rng(9, "w", 1);
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(x[i] == 0.0f, rng.uniform(i) < p) << spec << " i=" << i;
    }
  }
}

TEST(PerfInvariance, DareDropFractionOnTenMillion) {
  const size_t n = 10'000'000;
  const double p = 0.9;
  std::vector<float> x(n, 1.0f);
  auto o = edit::make_op(edit::parse_op_spec("drop:p=0.9"));
  edit::TensorContext ctx;
  ctx.name = "model.embed_tokens.weight";
  const std::vector<int64_t> shape{int64_t(n)};
  ctx.shape = shape;
  ctx.seed = 123;
  o->apply(x, ctx);
  size_t zeros = 0, first_half = 0;
  for (size_t i = 0; i < n; ++i) {
    zeros += x[i] == 0.0f;
    first_half += i < n / 2 && x[i] == 0.0f;
  }
  const double sd = std::sqrt(n * p * (1 - p));
  EXPECT_NEAR(double(zeros), p * n, 5 * sd);
  EXPECT_NEAR(double(first_half), p * n / 2, 5 * sd / std::sqrt(2.0));
  // Neighbouring draws are not correlated: pairs (i, i+1) both dropped ~ p².
  size_t both = 0;
  for (size_t i = 0; i + 1 < n; i += 2) both += x[i] == 0.0f && x[i + 1] == 0.0f;
  const double m = double(n / 2);
  EXPECT_NEAR(double(both), p * p * m, 5 * std::sqrt(m * p * p * (1 - p * p)));
}

TEST(PerfInvariance, BitdeltaMeanAndRmsAreTheOrderedSums) {
  // More than one reduction block of finite entries, with non-finite entries in between.
  auto x = messy(3 * util::kReduceBlock + 123, 21);
  for (const char* stat : {"mean", "rms"}) {
    auto o = edit::make_op(edit::parse_op_spec(std::string("bitdelta:stat=") + stat));
    edit::TensorContext ctx;
    ctx.name = "t";
    const std::vector<int64_t> shape{int64_t(x.size())};
    ctx.shape = shape;
    std::vector<float> y = x;
    o->apply(y, ctx);
    // Σ over every index with 0 for the non-finite entries, in the order of util/reduce.h
    // written out here: blocks of 65536, 16 lanes by index mod 16, lanes folded in halves.
    const bool rms = std::string(stat) == "rms";
    size_t finite = 0;
    double s = 0;
    for (size_t b = 0; b * 65536 < x.size(); ++b) {
      double lane[16] = {};
      for (size_t i = b * 65536; i < std::min(x.size(), (b + 1) * 65536); ++i) {
        if (!std::isfinite(x[i])) continue;
        ++finite;
        const double a = std::fabs(double(x[i]));
        lane[i % 16] += rms ? a * a : a;
      }
      for (size_t w = 8; w >= 1; w /= 2)
        for (size_t k = 0; k < w; ++k) lane[k] += lane[k + w];
      s += lane[0];
    }
    const double st = rms ? std::sqrt(s / double(finite)) : s / double(finite);
    const float v = static_cast<float>(1.0 * st);
    for (size_t i = 0; i < x.size(); ++i) {
      const float want = !std::isfinite(x[i]) ? x[i] : x[i] > 0 ? v : x[i] < 0 ? -v : 0.0f;
      ASSERT_EQ(io::f32_to_bits(y[i]), io::f32_to_bits(want)) << stat << " i=" << i;
    }
  }
}

TEST(PerfInvariance, StatsDoNotDependOnThreads) {
  const auto base = io::Checkpoint::open(fixture("mistral/base"));
  const auto post = io::Checkpoint::open(fixture("mistral/post_bf16_sharded"));
  const auto one = analysis::compute_stats(base, post, 1).to_json();
  const auto two = analysis::compute_stats(base, post, 2).to_json();
  EXPECT_EQ(one.dump(), two.dump());
  EXPECT_GT(one["total"]["numel"].get<uint64_t>(), 0u);
}

TEST(PerfInvariance, EditStatsAndBytesDoNotDependOnThreads) {
  TempDir t;
  for (const std::string op : {"dare:p=0.9", "bitdelta", "scale:alpha=0.5", "magnitude:p=0.9", "drop:p=0.5"}) {
    engine::EditRequest a;
    a.base = fixture("mistral/base");
    a.post = fixture("mistral/post_bf16_sharded");
    a.out = t / "a";
    a.ops = {op};
    a.seed = 3;
    a.threads = 1;
    auto b = a;
    b.out = t / "b";
    b.threads = 2;
    // A memory budget of one byte: every edited tensor runs alone; nothing else changes.
    auto c = b;
    c.out = t / "c";
    c.max_memory = 1;
    const auto ra = engine::run_edit(a), rb = engine::run_edit(b), rc = engine::run_edit(c);
    EXPECT_EQ(ra.to_json()["total"].dump(), rb.to_json()["total"].dump()) << op;
    EXPECT_EQ(ra.to_json()["tensors"].dump(), rb.to_json()["tensors"].dump()) << op;
    EXPECT_EQ(ra.to_json()["tensors"].dump(), rc.to_json()["tensors"].dump()) << op;
    expect_same_dirs(t / "a", t / "b");
    expect_same_dirs(t / "a", t / "c");
    fs::remove_all(t / "a");
    fs::remove_all(t / "b");
    fs::remove_all(t / "c");
  }
}
