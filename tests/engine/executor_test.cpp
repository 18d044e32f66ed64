// The shared executor on its own: streamed, buffered and copied tensors, block sizes, the
// encoder's overflow count, given shard layouts and a caller's sink.
#include "engine/executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>

#include "engine/pack_sink.h"
#include "engine_test_util.h"
#include "io/checkpoint.h"
#include "io/convert.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

// x = 2·a − b, counted as the executor's kernels count: every non-finite value it makes.
uint64_t axpy(size_t, std::span<const std::span<const float>> in, std::span<float> out, uint64_t,
              std::vector<std::string>&) {
  for (size_t i = 0; i < out.size(); ++i) out[i] = 2.0f * in[0][i] - in[1][i];
  return engine::count_nonfinite(out);
}

struct Inputs {
  TempDir dir;
  io::Checkpoint a, b;
  static io::Checkpoint make(const fs::path& d, uint32_t seed) {
    fs::create_directories(d);
    write_safetensors(d / "model.safetensors",
                      {{"big", io::DType::BF16, {300, 1000}, random_values(300000, seed)},
                       {"small", io::DType::F32, {7}, random_values(7, seed + 1)},
                       {"empty", io::DType::F32, {0, 4}, {}},
                       {"ids", io::DType::I64, {5}, std::vector<float>(5)}});
    return io::Checkpoint::open(d);
  }
  Inputs() : a(make(dir / "a", 1)), b(make(dir / "b", 2)) {}
};

std::vector<engine::ExecTensor> tensors(const Inputs& in, engine::ExecMode mode, bool pointwise) {
  std::vector<engine::ExecTensor> ts;
  for (const char* n : {"big", "small", "empty"}) {
    engine::ExecTensor t;
    t.name = n;
    t.shape = in.a.info(n).shape;
    t.out_dtype = io::DType::BF16;
    t.inputs = {{&in.a, n, {}}, {&in.b, n, {}}};
    t.mode = mode;
    t.pointwise = pointwise;
    ts.push_back(std::move(t));
  }
  engine::ExecTensor ids;
  ids.name = "ids";
  ids.shape = {5};
  ids.out_dtype = io::DType::I64;
  ids.inputs = {{&in.a, "ids", {}}};
  ids.mode = engine::ExecMode::Copy;
  ts.push_back(std::move(ids));
  return ts;
}

std::vector<float> values(const fs::path& dir, const std::string& name) {
  auto ck = io::Checkpoint::open(dir);
  std::vector<float> v(ck.info(name).numel());
  io::to_f32(ck.data(name), ck.info(name).dtype, v);
  return v;
}

}  // namespace

TEST(Executor, StreamedBlocksAndWholeTensorsWriteTheSameBytes) {
  Inputs in;
  engine::ExecOptions o;
  o.out = in.dir / "whole";
  const auto whole = engine::execute(tensors(in, engine::ExecMode::Auto, false), axpy, o);
  EXPECT_EQ(whole.streamed, (std::vector<bool>{false, false, false, false}));
  for (size_t block : {size_t(1), size_t(777), size_t(4096), size_t(1) << 16, size_t(1) << 21}) {
    o.out = in.dir / ("stream" + std::to_string(block));
    o.block = block;
    const auto rep = engine::execute(tensors(in, engine::ExecMode::Stream, false), axpy, o);
    EXPECT_TRUE(rep.streamed[0]) << block;
    expect_same_dirs(in.dir / "whole", o.out);
  }
  // The kernel's arithmetic, rounded once into bf16; the I64 tensor copied byte for byte.
  const auto a = values(in.dir / "a", "big"), b = values(in.dir / "b", "big"),
             x = values(in.dir / "whole", "big");
  for (size_t i = 0; i < x.size(); i += 997)
    EXPECT_EQ(x[i], io::bf16_to_f32(io::f32_to_bf16(2.0f * a[i] - b[i]))) << i;
  auto ck = io::Checkpoint::open(in.dir / "whole");
  auto ids_in = in.a.data("ids"), ids_out = ck.data("ids");
  EXPECT_TRUE(std::equal(ids_in.begin(), ids_in.end(), ids_out.begin(), ids_out.end()));
}

TEST(Executor, CopiesKeepNaNPayloadsAndCountOverflowOnEncoding) {
  TempDir d;
  fs::create_directories(d / "in");
  // bf16 0x7F81 is a signalling NaN payload that encoding from f32 would make 0x7FC0.
  {
    io::Staging st(d / "in" / "model.safetensors", {}, 0);
    io::SafetensorsWriter w(st.create("f"), "f",
                            {{"nan", io::DType::BF16, {2}}, {"big", io::DType::F32, {3}}}, {});
    const uint16_t nan[2] = {0x7F81, 0x3F80};
    w.write("nan", std::as_bytes(std::span(nan)));
    const float big[3] = {1e30f, -1e30f, 1.0f};
    w.write("big", std::as_bytes(std::span(big)));
    w.finish();
    st.commit_file("f");
  }
  auto ck = io::Checkpoint::open(d / "in");
  std::vector<engine::ExecTensor> ts(2);
  ts[0].name = "nan";
  ts[0].shape = {2};
  ts[0].out_dtype = io::DType::BF16;
  ts[0].mode = engine::ExecMode::Copy;
  ts[0].inputs = {{&ck, "nan", {}}};
  ts[1].name = "big";
  ts[1].shape = {3};
  ts[1].out_dtype = io::DType::F16;  // 1e30 overflows f16
  ts[1].mode = engine::ExecMode::Stream;
  ts[1].inputs = {{&ck, "big", {}}};
  engine::ExecOptions o;
  o.out = d / "out";
  const auto kernel = [](size_t, std::span<const std::span<const float>> in, std::span<float> out,
                         uint64_t, std::vector<std::string>&) {
    std::copy(in[0].begin(), in[0].end(), out.begin());
    return engine::count_nonfinite(out);
  };
  const auto rep = engine::execute(ts, kernel, o);
  EXPECT_EQ(rep.nonfinite, (std::vector<uint64_t>{0, 2}));
  auto out = io::Checkpoint::open(d / "out");
  uint16_t got[2];
  std::memcpy(got, out.data("nan").data(), 4);
  EXPECT_EQ(got[0], 0x7F81);
  EXPECT_EQ(got[1], 0x3F80);
}

TEST(Executor, GivenShardPlanAndCallerSink) {
  Inputs in;
  auto ts = tensors(in, engine::ExecMode::Auto, true);
  engine::ExecOptions o;
  o.out = in.dir / "sharded";
  // Tensors 0 and 3 in the second file, 1 and 2 in the first: the plan is honoured, with an index.
  o.shards = engine::ShardPlan{
      {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}, {1, 0, 0, 1}, true};
  const auto rep = engine::execute(ts, axpy, o);
  EXPECT_EQ(rep.files, o.shards->files);
  auto ck = io::Checkpoint::open(o.out);
  ASSERT_TRUE(ck.is_sharded());
  EXPECT_EQ(ck.shard_of("big"), 1u);
  EXPECT_EQ(ck.shard_of("small"), 0u);
  o.out = in.dir / "single";
  o.shards.reset();
  engine::execute(ts, axpy, o);
  EXPECT_EQ(values(in.dir / "sharded", "big"), values(in.dir / "single", "big"));

  // A pack sink gets every tensor's complete output bytes once, whatever the thread count.
  std::map<size_t, std::vector<std::byte>> seen;
  std::mutex mu;
  const auto encode = [&](size_t i, std::span<const std::byte> bytes) {
    std::lock_guard<std::mutex> g(mu);
    EXPECT_FALSE(seen.count(i)) << i;
    seen[i].assign(bytes.begin(), bytes.end());
    return pack::encode_raw(bytes, ts[i].out_dtype, ts[i].shape);
  };
  for (unsigned threads : {1u, 3u}) {
    seen.clear();
    engine::PackSink sink(ts, encode);
    o.out = in.dir / ("pack" + std::to_string(threads));
    o.threads = threads;
    o.reserve_bytes = 0;
    engine::execute(ts, axpy, o, &sink);
    ASSERT_EQ(seen.size(), ts.size());
    auto single = io::Checkpoint::open(in.dir / "single");
    for (size_t i = 0; i < ts.size(); ++i) {
      auto want = single.data(ts[i].name);
      EXPECT_TRUE(std::equal(want.begin(), want.end(), seen[i].begin(), seen[i].end()))
          << ts[i].name;
      EXPECT_EQ(sink.tensor_meta(i)["encoding"], "raw");
    }
    EXPECT_TRUE(fs::exists(o.out / pack::kPackFile));
  }
  EXPECT_TRUE(read_file(in.dir / "pack1" / pack::kPackFile) ==
              read_file(in.dir / "pack3" / pack::kPackFile));
}
