// nonfinite_out counts the NaN/Inf values of the output that neither input had.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/edit_engine.h"
#include "engine_test_util.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// base: zeros with one NaN; post: ones with NaN at 3 places and +Inf at 1 (16 elements).
void write_pair(const TempDir& t, io::DType dt) {
  fs::create_directories(t / "base");
  fs::create_directories(t / "post");
  std::vector<float> b(16, 0.0f), p(16, 1.0f);
  b[5] = kNaN;
  p[0] = p[7] = p[15] = kNaN;
  p[9] = kInf;
  write_safetensors(t / "base/model.safetensors", {{"w", dt, {4, 4}, b}});
  write_safetensors(t / "post/model.safetensors", {{"w", dt, {4, 4}, p}});
}

engine::EditResult run(const TempDir& t, const std::string& out, const std::string& op,
                        bool stream, bool pack, std::optional<io::DType> dtype = std::nullopt) {
  engine::EditRequest r;
  r.base = t / "base";
  r.post = t / "post";
  r.out = t / out;
  r.ops = {op};
  r.stream_pointwise = stream;
  r.pack = pack;
  r.dtype = dtype;
  return engine::run_edit(r);
}

}  // namespace

// NaN/Inf carried from post (or base) are the inputs' own: not counted, on every path.
TEST(NonFiniteOut, ValuesTheInputsHadAreNotCounted) {
  TempDir t;
  write_pair(t, io::DType::F32);
  for (bool stream : {true, false}) {
    auto r = run(t, stream ? "s" : "b", "scale:alpha=1", stream, false);
    EXPECT_EQ(r.nonfinite_out, 0u) << "stream " << stream;
    EXPECT_EQ(r.tensors.at(0).nonfinite_out, 0u);
  }
  auto pk = run(t, "p.pack", "scale:alpha=1", false, true);
  EXPECT_EQ(pk.nonfinite_out, 0u);
  engine::ApplyRequest a;
  a.base = t / "base";
  a.pack = t / "p.pack";
  a.out = t / "applied";
  EXPECT_EQ(engine::run_apply(a).nonfinite_out, 0u);
  // The output still holds them (it is post where the delta passes through).
  auto ck = io::Checkpoint::open(t / "s");
  std::vector<float> w(16);
  io::to_f32(ck.data("w"), ck.info("w").dtype, w);
  EXPECT_TRUE(std::isnan(w[0]) && std::isnan(w[7]) && std::isnan(w[15]) && std::isnan(w[5]));
  EXPECT_TRUE(std::isinf(w[9]));
}

// Values the edit makes non-finite from finite inputs are counted: Δ = 1 scaled by 10^6 overflows
// F16 (max 65504) at the 16 − 4 (post's NaN/Inf) − 1 (base's NaN) = 11 finite places.
TEST(NonFiniteOut, ValuesTheEditMadeAreCounted) {
  TempDir t;
  write_pair(t, io::DType::F16);
  for (bool stream : {true, false}) {
    auto r = run(t, stream ? "s" : "b", "scale:alpha=1e6", stream, false);
    EXPECT_EQ(r.nonfinite_out, 11u) << "stream " << stream;
  }
  EXPECT_EQ(run(t, "p.pack", "scale:alpha=1e6", false, true).nonfinite_out, 11u);
  engine::ApplyRequest a;
  a.base = t / "base";
  a.pack = t / "p.pack";
  a.out = t / "applied";
  engine::run_apply(a);
  // The rebuilt checkpoint reports what edit counted (its deltaedit.json is edit's).
  auto meta = nlohmann::json::parse(read_file(t / "applied/deltaedit.json"));
  EXPECT_EQ(meta["tensors"][0]["nonfinite_out"], 11u);
  EXPECT_EQ(read_file(t / "applied/deltaedit.json"), read_file(t / "s/deltaedit.json"));
  // An f32 output holds 10^6: nothing non-finite was made.
  EXPECT_EQ(run(t, "f32", "scale:alpha=1e6", true, false, io::DType::F32).nonfinite_out, 0u);
}
