// Properties every op must have: zero stays zero, NaN does not crash, empty tensors, determinism,
// and keyed randomness (seed, name, op index).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <thread>

#include "edit_test_util.h"
#include "util/error.h"
#include "util/reduce.h"

namespace deltaedit::edit {
namespace {
using namespace edit_test;

const char* const kSpecs[] = {
    "dare",
    "dare:p=0.5,k=-1",
    "dare:rescale=l1",
    "drop:p=0.3",
    "biased:k=0.5",
    "magnitude:p=0.5",
    "magnitude:scope=row",
    "bitdelta",
    "bitdelta:bits=3,stat=median",
    "bitdelta:granularity=row,sign0=zero",
    "resample",
    "resample:dist=normal",
    "lowrank:rank=2",
    "lowrank:method=randomized,rank=2",
    "lowrank:energy=0.9",
    "scale:alpha=0.7",
    "permute",
    "signflip:q=0.3",
    "signflip:q=0.2,rescale=mean",
};
const char* const kRandom[] = {"dare",
                               "drop:p=0.3",
                               "resample",
                               "resample:dist=normal",
                               "permute",
                               "signflip:q=0.3",
                               "lowrank:method=randomized,rank=2"};

TEST(AllOps, ZeroDeltaStaysZero) {
  for (const char* spec : kSpecs) {
    for (float v : edited(spec, std::vector<float>(60, 0.0f), {6, 10})) EXPECT_EQ(v, 0.0f) << spec;
  }
}

TEST(AllOps, EmptyTensor) {
  for (const char* spec : kSpecs) {
    EXPECT_NO_THROW(edited(spec, {}, {0, 4})) << spec;
    EXPECT_NO_THROW(edited(spec, {}, {0})) << spec;
  }
}

TEST(AllOps, NonFiniteInputsDoNotCrash) {
  std::vector<float> d = gaussian(60, 1);
  d[3] = NAN;
  d[17] = INFINITY;
  d[40] = -INFINITY;
  for (const char* spec : kSpecs) {
    const auto o = op(spec);
    try {
      const std::vector<float> out = run(*o, d, {6, 10}).out;
      EXPECT_EQ(out.size(), d.size());
      // NaN is never turned into a number, except by drop, which zeroes the entries it drops.
      if (o->name() != "drop") {
        EXPECT_TRUE(std::isnan(out[3])) << spec;
      }
    } catch (const Error& e) {
      // Only the SVD refuses, with a typed error naming the tensor.
      EXPECT_EQ(e.kind(), ErrorKind::Numeric) << spec;
      EXPECT_EQ(o->name(), "lowrank");
    }
  }
}

// The bytes of an edit depend on (spec, Δ, shape, seed, name, op index) only: not on the op
// instance having edited other tensors before, not on the buffer's address or alignment (the
// vectorised loops peel differently), not on other threads editing with the same instance.
TEST(AllOps, DeterministicBytes) {
  const std::vector<float> d = gaussian(600, 2);
  const std::vector<float> other = gaussian(600, 9, 0.5);
  for (const char* spec : kSpecs) {
    const std::vector<float> fresh = edited(spec, d, {20, 30}, 5, "x", 2);
    const auto o = op(spec);
    auto apply_at = [&](std::span<float> buf, const std::string& name) {
      TensorContext ctx;
      ctx.name = name;
      const std::vector<int64_t> shape{20, 30};
      ctx.shape = shape;
      ctx.seed = 5;
      ctx.op_index = 2;
      o->apply(buf, ctx);
    };
    // The same instance after another tensor (other values, other name).
    std::vector<float> warm = other;
    apply_at(warm, "y");
    std::vector<float> again = d;
    apply_at(again, "x");
    EXPECT_TRUE(same_bytes(again, fresh)) << spec << ": the op kept state between tensors";
    // One float past a 64-byte boundary.
    std::vector<float> shifted(d.size() + 17, 0.0f);
    const size_t off =
        1 + (16 - (reinterpret_cast<uintptr_t>(shifted.data()) / sizeof(float)) % 16) % 16;
    std::copy(d.begin(), d.end(), shifted.begin() + off);
    apply_at(std::span<float>(shifted.data() + off, d.size()), "x");
    EXPECT_TRUE(same_bytes(
        std::vector<float>(shifted.begin() + off, shifted.begin() + off + d.size()), fresh))
        << spec << ": depends on the buffer's alignment";
    // Four threads at once with the one instance.
    std::vector<std::vector<float>> outs(4, d);
    std::vector<std::thread> th;
    for (auto& v : outs) th.emplace_back([&apply_at, &v] { apply_at(v, "x"); });
    for (auto& t : th) t.join();
    for (const auto& v : outs)
      EXPECT_TRUE(same_bytes(v, fresh)) << spec << ": differs under concurrency";
  }
}

TEST(AllOps, RandomOpsAreKeyed) {
  const std::vector<float> d = gaussian(600, 3);
  for (const char* spec : kRandom) {
    const std::vector<float> a = edited(spec, d, {20, 30}, 5, "x", 2);
    EXPECT_FALSE(same_bytes(a, edited(spec, d, {20, 30}, 6, "x", 2))) << spec;
    EXPECT_FALSE(same_bytes(a, edited(spec, d, {20, 30}, 5, "y", 2))) << spec;
    EXPECT_FALSE(same_bytes(a, edited(spec, d, {20, 30}, 5, "x", 3))) << spec;
  }
}

TEST(AllOps, ShapeMismatchIsTypedError) {
  for (const char* spec : {"magnitude:scope=row", "bitdelta:granularity=row", "lowrank:rank=1"}) {
    EXPECT_THROW(edited(spec, gaussian(10, 4), {3, 4}), Error) << spec;
  }
}

// The order of util/reduce.h written out from its definition: blocks of 65536 indices; in a
// block, 16 lanes (index mod 16) summed in index order from +0, folded in halves (k += k+8,
// k += k+4, k += k+2, k += k+1); block sums added in block order from +0.
double lane_order_sum(const std::vector<double>& t) {
  double total = 0;
  for (size_t b = 0; b * 65536 < t.size(); ++b) {
    double lane[16] = {};
    for (size_t i = b * 65536; i < std::min(t.size(), (b + 1) * 65536); ++i) lane[i % 16] += t[i];
    for (size_t k = 0; k < 8; ++k) lane[k] += lane[k + 8];
    for (size_t k = 0; k < 4; ++k) lane[k] += lane[k + 4];
    for (size_t k = 0; k < 2; ++k) lane[k] += lane[k + 2];
    lane[0] += lane[1];
    total += lane[0];
  }
  return total;
}

TEST(Reduce, FixedBlockOrder) {
  const size_t n = 3 * util::kReduceBlock + 123;
  std::vector<float> x(n);
  // Magnitudes over 2^±20 so that the order of the adds shows in the last bits.
  for (size_t i = 0; i < n; ++i)
    x[i] =
        std::ldexp(float(1.0 / (1 + i % 1000)), int(i * 7 % 41) - 20) * (i % 3 == 0 ? -1.0f : 1.0f);
  std::vector<double> terms(x.begin(), x.end());
  const double expected = lane_order_sum(terms);
  // Not the plain left-to-right sum (so the test sees the order), and close to it.
  double plain = 0;
  for (double v : terms) plain += v;
  EXPECT_NE(expected, plain);
  EXPECT_NEAR(expected, plain, 1e-12 * std::fabs(plain));
  EXPECT_EQ(util::sum(x), expected);
  // Streamed in pieces of any size, the same bits.
  for (size_t piece : {size_t(1), size_t(5), size_t(16), size_t(4096), size_t(70001)}) {
    util::BlockedSum bs;
    for (size_t at = 0; at < n; at += piece) {
      const size_t m = std::min(piece, n - at);
      bs.add(m, [&](size_t j) { return static_cast<double>(x[at + j]); });
    }
    EXPECT_EQ(bs.sum(), expected) << "piece " << piece;
    EXPECT_EQ(bs.count(), n);
  }
  EXPECT_EQ(util::reduce_block_count(n), 4u);
  EXPECT_EQ(util::dot(x, x), util::sum_sq(x));
  const std::vector<float> y = {1.0f, NAN, -2.0f, INFINITY, 0.0f};
  const util::FiniteAbsStats st = util::finite_abs_stats(y);
  EXPECT_EQ(st.sum_abs, 3.0);
  EXPECT_EQ(st.sum_sq, 5.0);
  EXPECT_EQ(st.finite, 3u);
  EXPECT_EQ(st.nonfinite, 2u);
  EXPECT_EQ(util::sum(std::span<const float>{}), 0.0);
}

}  // namespace
}  // namespace deltaedit::edit

namespace deltaedit::edit {
namespace {
using namespace edit_test;

// Pointwise ops stream through apply_block in pieces; any cut of the tensor gives the bytes of
// apply() on the whole (the random ones draw by element index). Every other op is of another
// kind, whose class has no apply_block at all (see the static_asserts below).
template <class T>
concept HasApplyBlock = requires(const T& o, std::span<float> x, const TensorContext& c) {
  o.apply_block(x, 0, c);
};
template <class T>
concept HasObserve = requires(const T& o, const TensorContext& c) {
  o.observe_begin(c);
};
static_assert(HasApplyBlock<PointwiseOp> && !HasObserve<PointwiseOp>);
static_assert(HasObserve<ObservingOp> && !HasApplyBlock<ObservingOp>);
static_assert(!HasApplyBlock<WholeTensorOp> && !HasObserve<WholeTensorOp>);
static_assert(!HasApplyBlock<Op> && !HasObserve<Op>);
TEST(AllOps, PointwiseOpsGiveTheSameBytesInPieces) {
  const char* const pointwise[] = {"dare",
                                   "dare:p=0.5,k=-1",
                                   "drop:p=0.3",
                                   "scale:alpha=0.7",
                                   "scale:alpha=-1",
                                   "signflip:q=0.3",
                                   "signflip:q=0.2,rescale=mean"};
  std::vector<float> d = gaussian(20011, 9);
  d[5] = NAN;
  d[4099] = INFINITY;
  for (const char* spec : pointwise) {
    const auto o = op(spec);
    ASSERT_TRUE(o->pointwise()) << spec;
    const std::vector<int64_t> shape{int64_t(d.size())};
    TensorContext ctx;
    ctx.name = "layers.0.w";
    ctx.shape = shape;
    ctx.seed = 5;
    ctx.op_index = 2;
    std::vector<float> whole = d;
    o->apply(whole, ctx);
    for (size_t piece : {size_t(1), size_t(7), size_t(4096), size_t(5000)}) {
      std::vector<float> cut = d;
      for (size_t at = 0; at < cut.size(); at += piece) {
        const size_t m = std::min(piece, cut.size() - at);
        as_pointwise(*o)->apply_block(std::span<float>(cut.data() + at, m), at, ctx);
      }
      EXPECT_TRUE(same_bytes(cut, whole)) << spec << " piece " << piece;
    }
  }
  for (const char* spec : kSpecs) {
    const auto o = op(spec);
    bool listed = false;
    for (const char* p : pointwise) listed |= std::string_view(p) == spec;
    if (listed) continue;
    EXPECT_FALSE(o->pointwise()) << spec;
    EXPECT_EQ(as_pointwise(*o), nullptr) << spec;
  }
}

// Two-pass ops (bitdelta with bits=0 and a mean or rms scale, resample, biased by=delta) observe
// the tensor in pieces, then edit it in pieces: any cut gives the bytes of apply() on the whole,
// per tensor and per row.
// Runs a two-pass op on x cut into pieces of `piece` elements (observe all, then apply all);
// expects the bytes of apply() on the whole.
void expect_same_in_pieces(const char* spec, const std::vector<float>& x,
                           const std::vector<int64_t>& shape,
                           std::initializer_list<size_t> pieces) {
  const auto owned = op(spec);
  const ObservingOp* o = as_observing(*owned);
  ASSERT_NE(o, nullptr) << spec;
  TensorContext ctx;
  ctx.name = "layers.1.w";
  ctx.shape = shape;
  std::vector<float> whole = x;
  o->apply(whole, ctx);
  for (size_t piece : pieces) {
    auto st = o->observe_begin(ctx);
    int passes = 0;
    do {
      for (size_t at = 0; at < x.size(); at += piece)
        o->observe(*st, std::span<const float>(x.data() + at, std::min(piece, x.size() - at)), at);
    } while (o->observe_again(*st) && ++passes < 10);
    EXPECT_TRUE(o->multi_pass() || passes == 0) << spec << ": a two-pass op observes once";
    o->observe_end(*st);
    std::vector<float> cut = x;
    for (size_t at = 0; at < cut.size(); at += piece)
      o->apply_observed(*st, std::span<float>(cut.data() + at, std::min(piece, cut.size() - at)),
                        at, ctx);
    EXPECT_TRUE(same_bytes(cut, whole)) << spec << " piece " << piece;
  }
}

TEST(AllOps, TwoPassOpsGiveTheSameBytesInPieces) {
  const char* const two_pass[] = {"bitdelta",
                                  "bitdelta:stat=rms",
                                  "bitdelta:granularity=row,sign0=plus",
                                  "bitdelta:s=2,granularity=row,stat=rms",
                                  "resample",
                                  "resample:dist=normal,clip=true",
                                  "biased:k=0.5",
                                  "biased:k=2",
                                  "dare:rescale=l1",
                                  "dare:rescale=l1,k=-1,p=0.3"};
  std::vector<float> d = gaussian(37 * 541, 10);
  d[5] = NAN;
  d[600] = -INFINITY;
  for (size_t i = 1100; i < 1100 + 541; ++i) d[i] = 0.0f;  // a row of zeros (scale 0)
  for (const char* spec : two_pass) {
    ASSERT_TRUE(op(spec)->observes()) << spec;
    EXPECT_FALSE(as_observing(*op(spec))->multi_pass()) << spec;
    EXPECT_FALSE(op(spec)->pointwise()) << spec;
    expect_same_in_pieces(spec, d, {37, 541}, {1, 100, 541, 4096});
  }
  for (const char* spec : {"bitdelta:stat=median", "bitdelta:bits=2", "magnitude", "dare",
                           "lowrank:rank=2", "biased:by=grad", "permute"}) {
    EXPECT_FALSE(op(spec)->observes() && !as_observing(*op(spec))->multi_pass()) << spec;
  }
  // Multi-pass: magnitude (scope=tensor) on the same tensor and on a tied one.
  std::vector<float> tied = d;
  for (float& v : tied) v = std::round(v * 3000.0f);
  for (const char* spec : {"magnitude", "magnitude:p=0.5", "magnitude:p=0.999"}) {
    ASSERT_TRUE(op(spec)->observes()) << spec;
    EXPECT_TRUE(as_observing(*op(spec))->multi_pass()) << spec;
    expect_same_in_pieces(spec, d, {37, 541}, {1, 100, 541, 4096});
    expect_same_in_pieces(spec, tied, {37, 541}, {1, 100, 4096});
  }
  // Long enough to cross the fixed reduction blocks (util::kReduceBlock) of resample's mean |Δ|.
  std::vector<float> longer = gaussian(2 * util::kReduceBlock + 1001, 12);
  longer[70000] = NAN;
  for (const char* spec : {"resample", "resample:dist=normal"})
    expect_same_in_pieces(spec, longer, {int64_t(longer.size())}, {7, 65536, 100000});
}

}  // namespace
}  // namespace deltaedit::edit
