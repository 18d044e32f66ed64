// The edit engine end to end: fixtures, packs, invariances, pass-through, errors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "analysis/stats_runner.h"
#include "edit/op.h"
#include "engine/edit_engine.h"
#include "engine_test_util.h"
#include "io/checkpoint.h"
#include "util/error.h"

using namespace deltaedit;
using namespace deltaedit::testing;
using nlohmann::json;

namespace {

std::vector<float> tensor_f32(const io::SafetensorsFile& f, const std::string& name) {
  const auto* t = f.header().find(name);
  EXPECT_NE(t, nullptr) << name;
  std::vector<float> v(t ? t->numel() : 0);
  if (t) io::to_f32(f.data(*t), t->dtype, v);
  return v;
}

engine::EditRequest request(const fs::path& base, const fs::path& post, const fs::path& out,
                            std::vector<std::string> ops, uint64_t seed = 7) {
  engine::EditRequest r;
  r.base = base;
  r.post = post;
  r.out = out;
  r.ops = std::move(ops);
  r.seed = seed;
  return r;
}

}  // namespace

// The fixtures' edit_delta is per-tensor BitDelta (mean|Δ|·sign Δ, sign(0)=0) computed by PyTorch.
TEST(EngineFixture, BitdeltaReproducesReferenceEditDelta) {
  for (const std::string arch : {"llama", "qwen2", "mistral"}) {
    auto base = io::Checkpoint::open(fixture(arch + "/base"));
    auto post = io::Checkpoint::open(fixture(arch + "/post"));
    auto ref = io::SafetensorsFile::open(fixture(arch + "/ref.safetensors"));
    auto chain = engine::OpChain::build({"bitdelta"}, 0, "", "");
    size_t checked = 0;
    for (const auto& t : ref.header().tensors) {
      if (t.name.rfind("edit_delta.", 0) != 0) continue;
      const std::string name = t.name.substr(std::strlen("edit_delta."));
      ASSERT_TRUE(post.contains(name)) << arch << " " << name;
      auto te = engine::edit_tensor(chain, base, post, name, nullptr);
      auto want = tensor_f32(ref, t.name);
      ASSERT_EQ(te.edited.size(), want.size());
      double maxdiff = 0, maxabs = 0;
      for (size_t i = 0; i < want.size(); ++i) {
        maxdiff = std::max(maxdiff, std::fabs(double(te.edited[i]) - want[i]));
        maxabs = std::max(maxabs, std::fabs(double(want[i])));
      }
      // f32 reductions in PyTorch vs f64 here: agreement to a few f32 ulps of the scale.
      EXPECT_LE(maxdiff, 4e-7 * maxabs + 1e-12) << arch << " " << name;
      ++checked;
    }
    EXPECT_EQ(checked, arch == "qwen2" ? post.names().size() : post.names().size()) << arch;
  }
}

class PackApply : public ::testing::TestWithParam<std::string> {};

TEST_P(PackApply, ApplyRebuildsEditBitForBit) {
  TempDir t;
  const std::string op = GetParam();
  for (const std::string post_dir : {"llama/post_bf16_sharded", "qwen2/post"}) {
    const auto base = fixture(post_dir.substr(0, post_dir.find('/')) + "/base");
    const auto post = fixture(post_dir);
    const std::string tag = post_dir.substr(0, post_dir.find('/'));
    auto full = request(base, post, t / (tag + "-full"), {op});
    auto packed = request(base, post, t / (tag + "-pack"), {op});
    packed.pack = true;
    if (op.find("by=grad") != std::string::npos) {
      // Gradients named like the parameters, from the fixture's grad_post.* tensors.
      auto ref = io::SafetensorsFile::open(fixture(tag + "/ref.safetensors"));
      std::vector<SynthTensor> g;
      for (const auto& ti : ref.header().tensors)
        if (ti.name.rfind("grad_post.", 0) == 0)
          g.push_back({ti.name.substr(10), io::DType::F32, ti.shape, tensor_f32(ref, ti.name)});
      write_safetensors(t / (tag + "-grad.safetensors"), g);
      full.grad = packed.grad = t / (tag + "-grad.safetensors");
    }
    auto r1 = engine::run_edit(full);
    auto r2 = engine::run_edit(packed);
    engine::ApplyRequest ar{base, t / (tag + "-pack"), t / (tag + "-applied"), 2};
    engine::run_apply(ar);
    expect_same_dirs(t / (tag + "-full"), t / (tag + "-applied"));
    uint64_t stored = 0, n = 0;
    for (const auto& x : r2.tensors) {
      stored += x.stored_bytes;
      n += x.numel;
    }
    EXPECT_GT(stored, 0u);
    RecordProperty(tag + " bits/param", std::to_string(8.0 * double(stored) / double(n)));
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryOp, PackApply,
    ::testing::Values("dare:p=0.9,k=0", "dare:p=0.5,k=0.5,rescale=l1", "drop:p=0.7", "magnitude:p=0.9",
                      "magnitude:p=0.5,scope=row", "bitdelta", "bitdelta:bits=2", "bitdelta:granularity=row,s=1.5",
                      "resample:dist=uniform", "resample:dist=normal", "lowrank:ratio=0.1",
                      "lowrank:rank=4,method=randomized", "scale:alpha=0.3", "biased:by=delta,k=0.9",
                      "biased:by=grad,k=0.9", "permute", "signflip:q=0.2"),
    [](const auto& info) {
      std::string s = info.param;
      for (auto& c : s)
        if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
      return s;
    });

TEST(Engine, PacksAreCompactForBitdelta) {
  TempDir t;
  auto r = request(fixture("llama/base"), fixture("llama/post"), t / "p", {"bitdelta"});
  r.pack = true;
  auto res = engine::run_edit(r);
  uint64_t stored = 0, n = 0;
  for (const auto& x : res.tensors) {
    stored += x.stored_bytes;
    n += x.numel;
  }
  // 1 bit per sign plus one scale per tensor; tensors with exact zeros in Δ need a zero mask.
  EXPECT_LT(8.0 * double(stored) / double(n), 1.2);
}

TEST(Engine, ThreadCountDoesNotChangeBytes) {
  TempDir t;
  for (const std::string op : {"dare:p=0.9,k=0.5", "magnitude:p=0.7,scope=row", "lowrank:rank=3,method=randomized",
                               "resample:dist=normal"}) {
    auto a = request(fixture("mistral/base"), fixture("mistral/post_bf16_sharded"), t / "a", {op}, 11);
    a.threads = 1;
    auto b = a;
    b.out = t / "b";
    b.threads = 2;
    engine::run_edit(a);
    engine::run_edit(b);
    expect_same_dirs(t / "a", t / "b");
    fs::remove_all(t / "a");
    fs::remove_all(t / "b");
  }
}

// Pack components are assembled in tensor order, not in the order workers finish them.
TEST(Engine, PackBytesDoNotDependOnThreads) {
  TempDir t;
  for (const std::string op : {"bitdelta:bits=2", "lowrank:rank=3"}) {
    for (unsigned threads : {1u, 2u, 3u}) {
      auto r = request(fixture("mistral/base"), fixture("mistral/post_bf16_sharded"), t / std::to_string(threads), {op});
      r.pack = true;
      r.threads = threads;
      engine::run_edit(r);
    }
    expect_same_dirs(t / "1", t / "2");
    expect_same_dirs(t / "1", t / "3");
    for (const char* d : {"1", "2", "3"}) fs::remove_all(t / d);
  }
}

TEST(Engine, ReshardingTheInputDoesNotChangeTensors) {
  TempDir t;
  // A resharded copy of post: an op that matches nothing copies every tensor byte for byte.
  auto copy = request(fixture("llama/base"), fixture("llama/post"), t / "post-resharded", {"scale:alpha=1,include=^$"});
  copy.max_shard_size = 100000;
  engine::run_edit(copy);
  auto ck = io::Checkpoint::open(t / "post-resharded");
  EXPECT_TRUE(ck.is_sharded());
  EXPECT_GT(ck.files().size(), 3u);
  auto orig = io::Checkpoint::open(fixture("llama/post"));
  for (const auto& n : orig.names()) {
    auto a = orig.data(n), b = ck.data(n);
    ASSERT_TRUE(a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0) << n;
  }
  engine::run_edit(request(fixture("llama/base"), fixture("llama/post"), t / "e1", {"dare:p=0.8"}, 5));
  engine::run_edit(request(fixture("llama/base"), t / "post-resharded", t / "e2", {"dare:p=0.8"}, 5));
  auto e1 = io::Checkpoint::open(t / "e1");
  auto e2 = io::Checkpoint::open(t / "e2");
  ASSERT_EQ(e1.names().size(), e2.names().size());
  for (const auto& n : e1.names()) {
    auto a = e1.data(n), b = e2.data(n);
    ASSERT_TRUE(a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0) << n;
  }
}

TEST(Engine, ShardedOutputFollowsMaxShardSize) {
  TempDir t;
  auto r = request(fixture("qwen2/base"), fixture("qwen2/post"), t / "o", {"scale:alpha=0.5"});
  r.max_shard_size = engine::parse_size("60KB");
  engine::run_edit(r);
  auto ck = io::Checkpoint::open(t / "o");
  ASSERT_TRUE(ck.is_sharded());
  uint64_t total = 0;
  for (const auto& f : ck.files()) {
    uint64_t bytes = 0;
    for (const auto& ti : f.header().tensors) bytes += ti.nbytes();
    total += bytes;
    EXPECT_TRUE(bytes <= 60000 || f.header().tensors.size() == 1) << f.path();
    EXPECT_EQ(f.path().filename().string().rfind("model-0000", 0), 0u);
  }
  auto idx = json::parse(read_file(t / "o" / io::kIndexName));
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), total);
  EXPECT_EQ(read_file(t / "o" / io::kIndexName).back(), '\n');
  EXPECT_EQ(engine::parse_size("5GB"), 5000000000u);
  EXPECT_EQ(engine::parse_size("1GiB"), 1073741824u);
  EXPECT_THROW(engine::parse_size("5XB"), Error);
  EXPECT_THROW(engine::parse_size("GB"), Error);
}

TEST(Engine, OutputCarriesFilesMetadataAndProvenance) {
  TempDir t;
  engine::run_edit(request(fixture("llama/base"), fixture("llama/post_bf16_sharded"), t / "o", {"dare:p=0.5"}, 42));
  const auto in = fixture("llama/post_bf16_sharded");
  EXPECT_EQ(read_file(t / "o/config.json"), read_file(in / "config.json"));
  EXPECT_EQ(read_file(t / "o/generation_config.json"), read_file(in / "generation_config.json"));
  auto ck = io::Checkpoint::open(t / "o");
  for (const auto& f : ck.files()) {
    EXPECT_EQ(f.header().metadata.at("format"), "pt");
    EXPECT_EQ(f.header().metadata.at("deltaedit.seed"), "42");
    EXPECT_NE(f.header().metadata.at("deltaedit.ops").find("dare"), std::string::npos);
  }
  auto meta = json::parse(read_file(t / "o/deltaedit.json"));
  EXPECT_EQ(meta["seed"], 42);
  EXPECT_EQ(meta["ops"][0]["op"], "dare");
  EXPECT_DOUBLE_EQ(meta["ops"][0]["params"]["p"].get<double>(), 0.5);
  // Output dtype follows post (BF16) and the output passes verify.
  EXPECT_EQ(ck.info("model.norm.weight").dtype, io::DType::BF16);
  auto v = run_cli({"verify", (t / "o").string()});
  EXPECT_EQ(v.status, 0) << v.out << v.err;
  // --dtype rewrites the config's dtype and converts every floating tensor.
  auto r = request(fixture("llama/base"), fixture("llama/post_bf16_sharded"), t / "f32", {"dare:p=0.5"}, 42);
  r.dtype = io::DType::F32;
  engine::run_edit(r);
  auto c = json::parse(read_file(t / "f32/config.json"));
  EXPECT_EQ(c["dtype"], "float32");
  EXPECT_EQ(io::Checkpoint::open(t / "f32").info("model.norm.weight").dtype, io::DType::F32);
}

TEST(Engine, PassThroughOfUnmatchedTensors) {
  TempDir t;
  fs::create_directories(t / "base");
  fs::create_directories(t / "post");
  write_safetensors(t / "base/model.safetensors",
                    {{"w", io::DType::F32, {8, 8}, random_values(64, 1)},
                     {"only_base", io::DType::F32, {4}, random_values(4, 2)},
                     {"resized", io::DType::F32, {10, 4}, random_values(40, 3)},
                     {"ids", io::DType::I64, {3}, {}}});
  write_safetensors(t / "post/model.safetensors",
                    {{"w", io::DType::F32, {8, 8}, random_values(64, 4)},
                     {"only_post", io::DType::BF16, {5}, random_values(5, 5)},
                     {"resized", io::DType::F32, {12, 4}, random_values(48, 6)},
                     {"ids", io::DType::I64, {3}, {}}});
  std::ofstream(t / "post/tokenizer.json") << "{\"x\": 1}";
  auto res = engine::run_edit(request(t / "base", t / "post", t / "o", {"dare:p=0.5"}));
  auto post = io::Checkpoint::open(t / "post");
  auto out = io::Checkpoint::open(t / "o");
  EXPECT_FALSE(out.contains("only_base"));
  for (const std::string n : {"only_post", "ids"}) {
    auto a = post.data(n), b = out.data(n);
    ASSERT_TRUE(a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0) << n;
  }
  // The resized tensor: its 2 added rows come from post unchanged (its 10 shared rows are edited,
  // see ResizedVocabularyEditsTheSharedRows).
  {
    auto a = post.data("resized"), b = out.data("resized");
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data() + 40 * 4, b.data() + 40 * 4, 8 * 4), 0);
  }
  std::map<std::string, std::string> status;
  for (const auto& s : res.plan["skipped"]) status[s["name"]] = s["status"];
  EXPECT_EQ(status["only_base"], "only_base");
  EXPECT_EQ(status["only_post"], "only_post");
  EXPECT_EQ(status.count("resized"), 0u);
  EXPECT_EQ(res.plan["resized"].size(), 1u);
  EXPECT_EQ(status["ids"], "not_numeric");
  EXPECT_EQ(read_file(t / "o/tokenizer.json"), "{\"x\": 1}");
  EXPECT_EQ(res.plan["edited_tensors"], 2);
}

TEST(Engine, NonFiniteResultsAreCounted) {
  TempDir t;
  fs::create_directories(t / "base");
  fs::create_directories(t / "post");
  write_safetensors(t / "base/model.safetensors", {{"w", io::DType::F16, {4, 4}, std::vector<float>(16, 0.0f)}});
  write_safetensors(t / "post/model.safetensors", {{"w", io::DType::F16, {4, 4}, std::vector<float>(16, 1.0f)}});
  auto res = engine::run_edit(request(t / "base", t / "post", t / "o", {"scale:alpha=1e6"}));
  EXPECT_EQ(res.nonfinite_out, 16u);  // 1e6 overflows F16 (max 65504) to Inf
}

TEST(Engine, ErrorsComeBeforeAnyOutput) {
  TempDir t;
  const auto b = fixture("llama/base"), p = fixture("llama/post");
  auto expect_usage = [&](engine::EditRequest r, const std::string& needle, bool out_exists = false) {
    try {
      engine::run_edit(r);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Usage) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_EQ(fs::exists(r.out), out_exists);
    EXPECT_TRUE(leftovers(t.path).empty());
  };
  expect_usage(request(b, p, t / "o", {"nosuchop"}), "nosuchop");
  expect_usage(request(b, p, t / "o", {"dare:p=1"}), "'p'");
  expect_usage(request(b, p, t / "o", {"dare:q=1"}), "'q'");
  expect_usage(request(b, p, t / "o", {"biased:by=grad"}), "--grad");
  write_safetensors(t / "g.safetensors", {{"model.norm.weight", io::DType::F32, {64}, random_values(64, 1)}});
  auto r = request(b, p, t / "o", {"biased:by=grad"});
  r.grad = t / "g.safetensors";
  expect_usage(r, "gradient");
  expect_usage(request(b, p, p, {"dare"}), "exists", /*out_exists=*/true);
  auto bad = request(b, p, t / "o", {"dare"});
  bad.include = "([";
  expect_usage(bad, "--include");
}

TEST(Engine, DryRunWritesNothing) {
  TempDir t;
  auto r = request(fixture("llama/base"), fixture("llama/post"), t / "o", {"lowrank:ratio=0.25", "scale:alpha=0.1"});
  r.dry_run = true;
  auto res = engine::run_edit(r);
  EXPECT_FALSE(fs::exists(t / "o"));
  EXPECT_EQ(res.plan["scope"].size(), 2u);
  EXPECT_EQ(res.plan["scope"][0]["tensors"], 16);  // 2-D tensors only
  EXPECT_EQ(res.plan["scope"][1]["tensors"], 21);
  EXPECT_GT(res.plan["peak_memory_estimate"].get<uint64_t>(), 0u);
  EXPECT_GT(res.plan["checkpoint_bytes"].get<uint64_t>(), 800000u);
  // The estimate follows the memory budget: a tiny budget lets one tensor run at a time.
  auto big = r, small = r;
  big.max_memory = uint64_t(1) << 40;
  small.max_memory = 1;
  const uint64_t eb = engine::run_edit(big).plan["peak_memory_estimate"].get<uint64_t>(),
                 es = engine::run_edit(small).plan["peak_memory_estimate"].get<uint64_t>();
  EXPECT_LT(es, eb);
  // Streaming chains hold no tensor buffer: their estimate is the per-worker chunks alone.
  auto st = request(fixture("llama/base"), fixture("llama/post"), t / "o", {"dare:p=0.5"});
  st.dry_run = true;
  st.threads = 1;
  const auto ps = engine::run_edit(st).plan;
  EXPECT_EQ(ps["streamed_tensors"].get<uint64_t>(), ps["edited_tensors"].get<uint64_t>());
  EXPECT_EQ(ps["peak_memory_estimate"].get<uint64_t>(), uint64_t(64) << 20);
}

TEST(Engine, ScaleMinusOneGivesTheBase) {
  TempDir t;
  engine::run_edit(request(fixture("llama/base"), fixture("llama/post"), t / "o", {"scale:alpha=-1"}));
  auto base = io::Checkpoint::open(fixture("llama/base"));
  auto out = io::Checkpoint::open(t / "o");
  for (const auto& n : base.names()) {
    auto a = base.data(n), b = out.data(n);
    EXPECT_TRUE(a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0) << n;
  }
}

TEST(Engine, CompositionAppliesInOrder) {
  // dare then bitdelta = bitdelta of the dare result: every edited tensor holds ≤ 3 distinct deltas.
  auto base = io::Checkpoint::open(fixture("llama/base"));
  auto post = io::Checkpoint::open(fixture("llama/post"));
  auto chain = engine::OpChain::build({"dare:p=0.5", "bitdelta"}, 3, "", "");
  auto te = engine::edit_tensor(chain, base, post, "model.layers.0.mlp.up_proj.weight", nullptr);
  std::set<float> distinct(te.edited.begin(), te.edited.end());
  EXPECT_LE(distinct.size(), 3u);
  EXPECT_EQ(te.applied, (std::vector<std::string>{"dare", "bitdelta"}));
  size_t zeros = std::count(te.edited.begin(), te.edited.end(), 0.0f);
  EXPECT_NEAR(double(zeros) / te.edited.size(), 0.5, 0.05);  // dare dropped about half
}

// A single-file post over 5 GB is planned as 5 GB Hugging Face shards by default; one at or under
// 5 GB stays a single file. The checkpoints are sparse files (a header and a hole), so the plan
// (a dry run reads no tensor data) costs no disk.
namespace {
void write_sparse_checkpoint(const fs::path& dir, const std::vector<uint64_t>& numels) {
  fs::create_directories(dir);
  json h = json::object();
  uint64_t off = 0;
  for (size_t i = 0; i < numels.size(); ++i) {
    h["w" + std::to_string(i)] = {{"dtype", "BF16"}, {"shape", {numels[i]}}, {"data_offsets", {off, off + 2 * numels[i]}}};
    off += 2 * numels[i];
  }
  std::string text = h.dump();
  while (text.size() % 8) text += ' ';
  const fs::path p = dir / io::kSingleName;
  {
    std::ofstream f(p, std::ios::binary);
    const uint64_t n = text.size();
    f.write(reinterpret_cast<const char*>(&n), 8);
    f.write(text.data(), std::streamsize(text.size()));
  }
  fs::resize_file(p, 8 + text.size() + off);
}
}  // namespace

TEST(Engine, SingleFilePostOverFiveGBIsShardedAtFiveGB) {
  TempDir t;
  write_sparse_checkpoint(t / "big_base", {1'000'000'000, 1'000'000'000, 1'000'000'000});  // 6 GB
  write_sparse_checkpoint(t / "big_post", {1'000'000'000, 1'000'000'000, 1'000'000'000});
  auto r = request(t / "big_base", t / "big_post", t / "o", {"scale:alpha=0.5"});
  r.dry_run = true;
  auto plan = engine::run_edit(r).plan;
  EXPECT_EQ(plan["output_files"], json({"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
  EXPECT_EQ(plan["checkpoint_bytes"].get<uint64_t>(), 6'000'000'000u);
  EXPECT_FALSE(fs::exists(t / "o"));

  write_sparse_checkpoint(t / "edge_base", {1'250'000'000, 1'250'000'000});  // exactly 5 GB
  write_sparse_checkpoint(t / "edge_post", {1'250'000'000, 1'250'000'000});
  auto e = request(t / "edge_base", t / "edge_post", t / "o", {"scale:alpha=0.5"});
  e.dry_run = true;
  EXPECT_EQ(engine::run_edit(e).plan["output_files"], json({"model.safetensors"}));
  // An explicit --max-shard-size wins over the default.
  e.max_shard_size = engine::parse_size("3GB");
  EXPECT_EQ(engine::run_edit(e).plan["output_files"],
            json({"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}));
}

// Chains of pointwise and two-pass ops stream through without a whole-tensor buffer; the bytes
// (and the report) are those of the buffered path, on BF16 shards against an F32 base and with a
// dtype change.
TEST(Engine, StreamedPointwiseEditEqualsBufferedEdit) {
  TempDir t;
  const std::vector<std::vector<std::string>> chains = {
      {"dare:p=0.9"}, {"drop:p=0.5", "scale:alpha=0.3"}, {"signflip:q=0.2,rescale=mean"},
      {"dare:p=0.5,k=0.5,include=mlp", "scale:alpha=-0.5,exclude=mlp"},
      {"bitdelta"}, {"dare:p=0.5", "bitdelta:granularity=row"}, {"bitdelta:stat=rms", "scale:alpha=0.5", "bitdelta"},
      {"resample:dist=normal"}, {"biased:k=0.5", "dare:p=0.3", "resample"},
      // multi-pass (magnitude's threshold select) and two-pass dare rescale=l1, after and before other ops
      {"magnitude:p=0.9"}, {"dare:p=0.5", "magnitude:p=0.7", "scale:alpha=0.5"}, {"dare:p=0.9,rescale=l1"},
      {"dare:p=0.3,k=-1,rescale=l1", "magnitude:p=0.5"}};
  for (const auto& ops : chains) {
    for (const char* dtype : {"", "F32"}) {
      auto a = request(fixture("llama/base"), fixture("llama/post_bf16_sharded"), t / "s", ops, 7);
      if (*dtype) a.dtype = io::DType::F32;
      auto b = a;
      b.out = t / "b";
      b.stream_pointwise = false;
      const auto ra = engine::run_edit(a), rb = engine::run_edit(b);
      EXPECT_GT(ra.plan["streamed_tensors"].get<uint64_t>(), 0u);
      EXPECT_EQ(rb.plan["streamed_tensors"].get<uint64_t>(), 0u);
      EXPECT_EQ(ra.to_json()["tensors"].dump(), rb.to_json()["tensors"].dump()) << ops[0];
      EXPECT_EQ(ra.to_json()["total"].dump(), rb.to_json()["total"].dump()) << ops[0];
      expect_same_dirs(t / "s", t / "b");
      fs::remove_all(t / "s");
      fs::remove_all(t / "b");
    }
  }
  // A chain with an op that needs the whole tensor (magnitude per row) is never streamed.
  auto m = request(fixture("llama/base"), fixture("llama/post_bf16_sharded"), t / "m",
                   {"dare:p=0.5", "magnitude:p=0.5,scope=row"});
  m.dry_run = true;
  EXPECT_EQ(engine::run_edit(m).plan["streamed_tensors"].get<uint64_t>(), 0u);
}

// Tensors larger than the streaming chunk (2^20 elements) and several reduction blocks (2^16),
// with lengths that are multiples of neither: the streamed and the buffered edit write the same
// bytes, and both equal the op applied here to the whole Δ in memory, W' = bf16(W_base + Δ').
TEST(Engine, TensorsLargerThanAChunkEqualTheOpOnTheWholeDelta) {
  TempDir t;
  const std::vector<int64_t> shape{1031, 1057};  // 1,089,767 elements
  const size_t n = size_t(shape[0] * shape[1]);
  ASSERT_GT(n, size_t(1) << 20);
  const auto wb = random_values(n, 11, 0.02f);
  auto wp = wb;
  const auto d = random_values(n, 12, 1e-3f);
  for (size_t i = 0; i < n; ++i) wp[i] += d[i];
  for (const char* side : {"base", "post"}) {
    fs::create_directories(t / side);
    write_safetensors(t / side / "model.safetensors",
                      {{"w", io::DType::BF16, shape, side[0] == 'b' ? wb : wp}});
  }
  // The inputs as stored (BF16), widened: Δ = post − base in f32.
  auto stored = [&](const char* side) {
    auto f = io::SafetensorsFile::open(t / side / "model.safetensors");
    return tensor_f32(f, "w");
  };
  const auto base = stored("base"), post = stored("post");
  for (const std::vector<std::string>& ops :
       std::vector<std::vector<std::string>>{{"dare:p=0.9"}, {"dare:p=0.7,rescale=l1"}, {"magnitude:p=0.9"},
                                             {"bitdelta"}, {"drop:p=0.5", "scale:alpha=0.5"}}) {
    SCOPED_TRACE(ops[0]);
    auto a = request(t / "base", t / "post", t / "s", ops, 3);
    auto b = a;
    b.out = t / "b";
    b.stream_pointwise = false;
    const auto ra = engine::run_edit(a), rb = engine::run_edit(b);
    EXPECT_EQ(ra.plan["streamed_tensors"].get<uint64_t>(), 1u);
    EXPECT_EQ(rb.plan["streamed_tensors"].get<uint64_t>(), 0u);
    expect_same_dirs(t / "s", t / "b");
    EXPECT_EQ(ra.to_json()["total"].dump(), rb.to_json()["total"].dump());
    // The chain applied to the whole Δ at once, the way a single op sees a tensor.
    std::vector<float> delta(n);
    for (size_t i = 0; i < n; ++i) delta[i] = post[i] - base[i];
    for (size_t k = 0; k < ops.size(); ++k) {
      edit::TensorContext ctx;
      ctx.name = "w";
      ctx.shape = shape;
      ctx.seed = 3;
      ctx.op_index = uint32_t(k);
      edit::make_op(edit::parse_op_spec(ops[k]))->apply(delta, ctx);
    }
    std::vector<float> expect(n);
    for (size_t i = 0; i < n; ++i) expect[i] = base[i] + delta[i];
    std::vector<std::byte> eb(n * 2);
    io::from_f32(expect, io::DType::BF16, eb);
    auto out = io::SafetensorsFile::open(t / "s" / "model.safetensors");
    const auto* ti = out.header().find("w");
    ASSERT_NE(ti, nullptr);
    const auto got = out.data(*ti);
    ASSERT_EQ(got.size(), eb.size());
    size_t differ = 0;
    for (size_t i = 0; i < eb.size(); i += 2) differ += std::memcmp(&got[i], &eb[i], 2) != 0;
    EXPECT_EQ(differ, 0u) << "of " << n;
    fs::remove_all(t / "s");
    fs::remove_all(t / "b");
  }
}

// The approximation term's input is the checkpoint `edit` writes: D = W_written − W_post, in the
// output (post's, BF16 here) dtype, so that the part of a small edit lost to BF16 rounding is not
// counted as an edit. Checked value for value against the written checkpoint.
TEST(Engine, IncrementsAreTheWrittenCheckpointMinusPost) {
  TempDir t;
  const auto basep = fixture("llama/base"), postp = fixture("llama/post_bf16_sharded");
  for (const std::vector<std::string>& ops :
       std::vector<std::vector<std::string>>{{"dare:p=0.9"}, {"scale:alpha=0.01"}, {"bitdelta"}}) {
    SCOPED_TRACE(ops[0]);
    const fs::path out = t / "o";
    engine::run_edit(request(basep, postp, out, ops, 5));
    auto chain = engine::OpChain::build(ops, 5, "", "");
    auto base = io::Checkpoint::open(basep);
    auto post = io::Checkpoint::open(postp);
    auto written = io::Checkpoint::open(out);
    const auto inc = engine::edit_increments(chain, base, post, nullptr);
    ASSERT_FALSE(inc.d.empty());
    size_t vanished = 0, moved = 0;
    for (const auto& [name, d] : inc.d) {
      const auto& pi = post.info(name);
      ASSERT_EQ(pi.dtype, io::DType::BF16) << name;
      std::vector<float> w(d.size()), q(d.size()), b(d.size());
      io::to_f32(written.data(name), written.info(name).dtype, w);
      io::to_f32(post.data(name), pi.dtype, q);
      io::to_f32(base.data(name), base.info(name).dtype, b);
      for (size_t i = 0; i < d.size(); ++i) {
        ASSERT_EQ(d[i], w[i] - q[i]) << name << "[" << i << "]";
        moved += q[i] != b[i];
        vanished += q[i] != b[i] && d[i] == 0.0f;
      }
    }
    // A 1% extrapolation of Δ is partly below half a BF16 ulp of W: there D = 0 where the
    // unrounded term (0.01·Δ, non-zero wherever Δ is) described a model that is never written.
    if (ops[0] == "scale:alpha=0.01") {
      EXPECT_GT(vanished, 0u) << "of " << moved;
      RecordProperty("vanished_in_rounding", std::to_string(vanished) + " of " + std::to_string(moved));
    }
    fs::remove_all(out);
  }
}

// A resized vocabulary (post embed [V+n, d] against base [V, d]): stats are over the V shared
// rows, stated in the report; the n added rows, which no base row matches, are not a delta.
TEST(Engine, StatsOfAResizedVocabularyAreOverTheSharedRows) {
  TempDir t;
  fs::create_directories(t / "base");
  fs::create_directories(t / "post");
  const auto eb = random_values(10 * 4, 3), ep = random_values(12 * 4, 6);
  write_safetensors(t / "base/model.safetensors",
                    {{"embed", io::DType::F32, {10, 4}, eb}, {"w", io::DType::F32, {4, 4}, random_values(16, 1)}});
  write_safetensors(t / "post/model.safetensors",
                    {{"embed", io::DType::F32, {12, 4}, ep}, {"w", io::DType::F32, {4, 4}, random_values(16, 2)}});
  auto base = io::Checkpoint::open(t / "base");
  auto post = io::Checkpoint::open(t / "post");
  const auto r = analysis::compute_stats(base, post, 2);
  ASSERT_EQ(r.tensors.size(), 2u);
  EXPECT_TRUE(r.skipped.empty());
  const auto& e = r.tensors[0].name == "embed" ? r.tensors[0] : r.tensors[1];
  ASSERT_EQ(e.name, "embed");
  EXPECT_EQ(e.shared_rows, 10);
  EXPECT_EQ(e.post_rows, 12);
  EXPECT_EQ(e.stats.n, 40u);
  double sq = 0, mx = 0;
  for (size_t i = 0; i < 40; ++i) {
    const double d = double(ep[i] - eb[i]);  // Δ in f32, as the engine forms it
    sq += d * d;
    mx = std::max(mx, std::fabs(d));
  }
  EXPECT_NEAR(e.stats.norm, std::sqrt(sq), 1e-12 * std::sqrt(sq));
  EXPECT_EQ(e.stats.max_abs, mx);
  const auto j = r.to_json();
  bool stated = false;
  for (const auto& tj : j["tensors"])
    if (tj["name"] == "embed") {
      EXPECT_EQ(tj["status"], "resized");
      EXPECT_EQ(tj["shared_rows"], 10);
      stated = tj["note"].get<std::string>().find("10 rows shared") != std::string::npos;
    }
  EXPECT_TRUE(stated);
  auto cli = run_cli({"stats", "--base", (t / "base").string(), "--post", (t / "post").string()});
  EXPECT_EQ(cli.status, 0) << cli.err;
  EXPECT_NE(cli.out.find("resized: embed"), std::string::npos) << cli.out;
}

// A resized vocabulary in edit: the V shared rows are edited (scale:alpha=-1 gives base's rows
// exactly), the n added rows pass through from post, in the output dtype; the plan says so. In a
// pack the tensor is stored whole (a pack rebuilds base-shaped deltas only).
TEST(Engine, ResizedVocabularyEditsTheSharedRows) {
  TempDir t;
  fs::create_directories(t / "base");
  fs::create_directories(t / "post");
  const auto eb = random_values(10 * 4, 3), ep = random_values(12 * 4, 6);
  write_safetensors(t / "base/model.safetensors", {{"embed", io::DType::F32, {10, 4}, eb}});
  write_safetensors(t / "post/model.safetensors", {{"embed", io::DType::BF16, {12, 4}, ep}});
  auto r = request(t / "base", t / "post", t / "o", {"scale:alpha=-1"});
  r.dtype = io::DType::F32;
  const auto res = engine::run_edit(r);
  ASSERT_EQ(res.plan["resized"].size(), 1u);
  EXPECT_EQ(res.plan["resized"][0]["shared_rows"], 10);
  EXPECT_EQ(res.plan["resized"][0]["post_rows"], 12);
  EXPECT_NE(res.plan["resized"][0]["note"].get<std::string>().find("2 added rows"), std::string::npos);
  EXPECT_EQ(res.plan["edited_params"], 40);
  auto out = io::SafetensorsFile::open(t / "o/model.safetensors");
  auto post = io::SafetensorsFile::open(t / "post/model.safetensors");
  const auto w = tensor_f32(out, "embed"), p = tensor_f32(post, "embed");
  ASSERT_EQ(w.size(), 48u);
  ASSERT_EQ(out.header().find("embed")->dtype, io::DType::F32);
  for (size_t i = 0; i < 40; ++i) EXPECT_EQ(w[i], eb[i]) << i;  // base + 0·Δ
  for (size_t i = 40; i < 48; ++i) EXPECT_EQ(w[i], p[i]) << i;   // post's added rows (BF16 widened)
  // The CLI reports it.
  auto cli = run_cli({"edit", "--base", (t / "base").string(), "--post", (t / "post").string(), "--op",
                      "dare:p=0.5", "--out", (t / "o2").string()});
  EXPECT_EQ(cli.status, 0) << cli.err;
  EXPECT_NE(cli.out.find("resized: embed"), std::string::npos) << cli.out;
  // As a pack: stored whole, said so.
  auto pk = request(t / "base", t / "post", t / "p", {"dare:p=0.5"});
  pk.pack = true;
  const auto pres = engine::run_edit(pk);
  ASSERT_EQ(pres.plan["skipped"].size(), 1u);
  EXPECT_EQ(pres.plan["skipped"][0]["status"], "resized");
}
