// Corrupt inputs through the CLI: every error names the file (and the tensor or key), a corrupt
// pack or index exits 1 (Format/Io), never 2 (Usage), and sizes read from files never wrap.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../engine/engine_test_util.h"

using namespace deltaedit::testing;
using nlohmann::json;

namespace {

const fs::path kBase = fixture("llama/base");
const fs::path kPost = fixture("llama/post");
const std::string kQ = "model.layers.0.self_attn.q_proj.weight";

// One pack per op, made once for all the tests here.
const fs::path& make_pack(const std::string& op) {
  static std::map<std::string, fs::path> packs;
  static TempDir root;
  auto it = packs.find(op);
  if (it != packs.end()) return it->second;
  const fs::path p = root / ("pack-" + std::to_string(packs.size()));
  auto r = run_cli({"edit", "--base", kBase.string(), "--post", kPost.string(), "--op", op,
                    "--pack", "--out", p.string()});
  EXPECT_EQ(r.status, 0) << r.err;
  return packs[op] = p;
}

void copy_dir(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from))
    fs::copy_file(e.path(), to / e.path().filename());
}

// A copy of a pack whose deltaedit.json `edit` has rewritten.
fs::path corrupt_meta(const TempDir& t, const std::string& op,
                      const std::function<void(json&)>& edit) {
  const fs::path p = t / "corrupt.pack";
  copy_dir(make_pack(op), p);
  json j = json::parse(read_file(p / "deltaedit.json"));
  edit(j);
  std::ofstream(p / "deltaedit.json", std::ios::trunc) << j.dump(1);
  return p;
}

json& tensor_meta(json& j, const std::string& name) {
  for (auto& t : j["pack"]["tensors"])
    if (t["name"] == name) return t;
  throw std::runtime_error("no tensor " + name);
}

RunResult apply(const fs::path& pack, const TempDir& t) {
  return run_cli(
      {"apply", "--base", kBase.string(), "--pack", pack.string(), "--out", (t / "out").string()});
}

void expect_names(const RunResult& r, const std::vector<std::string>& needles) {
  for (const auto& n : needles)
    EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
}

}  // namespace

TEST(FileErrors, PackMetaThatIsNotJson) {
  TempDir t;
  const fs::path p = t / "p";
  copy_dir(make_pack("bitdelta"), p);
  const std::string text = read_file(p / "deltaedit.json");
  std::ofstream(p / "deltaedit.json", std::ios::trunc) << text.substr(0, text.size() / 2);
  auto r = apply(p, t);
  EXPECT_EQ(r.status, 1) << r.err;
  expect_names(r, {(p / "deltaedit.json").string()});
  auto i = run_cli({"inspect", p.string()});
  EXPECT_EQ(i.status, 1) << i.err;
  expect_names(i, {(p / "deltaedit.json").string()});
  EXPECT_FALSE(fs::exists(t / "out"));
}

TEST(FileErrors, PackMetaWithWrongTypesNamesFileAndTensor) {
  TempDir t;
  auto p = corrupt_meta(t, "bitdelta", [](json& j) { tensor_meta(j, kQ)["encoding"] = 7; });
  auto r = apply(p, t);
  EXPECT_EQ(r.status, 1) << r.err;
  expect_names(r, {(p / "deltaedit.json").string(), kQ, "malformed JSON"});

  TempDir t2;
  auto p2 = corrupt_meta(t2, "bitdelta", [](json& j) { j["pack"].erase("layout"); });
  auto r2 = apply(p2, t2);
  EXPECT_EQ(r2.status, 1) << r2.err;
  expect_names(r2, {(p2 / "deltaedit.json").string(), "layout"});

  TempDir t3;
  auto p3 = corrupt_meta(t3, "bitdelta", [](json& j) { tensor_meta(j, kQ).erase("shape"); });
  auto r3 = run_cli({"inspect", p3.string()});
  EXPECT_EQ(r3.status, 1) << r3.err;
  expect_names(r3, {(p3 / "deltaedit.json").string(), kQ});

  TempDir t4;  // the params of an encoding are read at decode time: still named
  auto p4 = corrupt_meta(t4, "bitdelta", [](json& j) {
    for (auto& x : j["pack"]["tensors"])
      if (x["params"].contains("bits")) x["params"]["bits"] = "two";
  });
  auto r4 = apply(p4, t4);
  EXPECT_EQ(r4.status, 1) << r4.err;
  expect_names(r4, {p4.string(), "tensor '"});
}

// A layout shape whose byte size overflows 64 bits: refused as Format naming the tensor (before,
// the wrapped size made it look like a base mismatch: a usage error).
TEST(FileErrors, PackShapeThatOverflows) {
  TempDir t;
  const int64_t big = int64_t(1) << 32;
  auto p = corrupt_meta(t, "bitdelta", [&](json& j) {
    for (auto& x : j["pack"]["layout"]["tensors"])
      if (x["name"] == kQ) x["shape"] = {big, big, big};
  });
  auto r = apply(p, t);
  EXPECT_EQ(r.status, 1) << r.err;
  expect_names(r, {(p / "deltaedit.json").string(), kQ, "overflows 64 bits"});
  auto i = run_cli({"inspect", p.string()});  // inspect reads the per-tensor shapes, not the layout
  EXPECT_EQ(i.status, 0) << i.err;

  TempDir t2;
  auto p2 = corrupt_meta(t2, "bitdelta", [&](json& j) {
    tensor_meta(j, kQ)["shape"] = {big, big, big};
  });
  auto i2 = run_cli({"inspect", p2.string()});
  EXPECT_EQ(i2.status, 1) << i2.err;
  expect_names(i2, {(p2 / "deltaedit.json").string(), kQ, "overflows 64 bits"});
}

// Low-rank factors whose rows × cols wraps to the tensor's element count (rank 0 so that the
// factor sizes agree): an unchecked product would reconstruct 2^62 rows into a small buffer.
TEST(FileErrors, LowRankParamsThatWrap) {
  TempDir t;
  bool found = false;
  auto p = corrupt_meta(t, "lowrank:rank=2", [&](json& j) {
    for (auto& x : j["pack"]["tensors"]) {
      if (x["encoding"] != "lowrank" || x["name"] != kQ) continue;
      found = true;
      const int64_t n = 64 * 64;  // q_proj: [64, 64]; (2^62 + 1)·n ≡ n (mod 2^64) as 4 | n
      x["params"] = {{"rank", 0}, {"rows", (int64_t(1) << 62) + 1}, {"cols", n}};
    }
  });
  ASSERT_TRUE(found) << "q_proj was not stored as low-rank factors";
  auto r = apply(p, t);
  EXPECT_EQ(r.status, 1) << r.err;
  expect_names(r, {p.string(), kQ, "overflows 64 bits"});
}

TEST(FileErrors, PackWithoutItsTensorFileIsAFormatError) {
  TempDir t;
  const fs::path p = t / "p";
  copy_dir(make_pack("bitdelta"), p);
  fs::remove(p / "pack.safetensors");
  auto r = apply(p, t);
  EXPECT_EQ(r.status, 1) << r.err;
  expect_names(r, {p.string(), "not a delta pack"});
  auto missing = run_cli({"apply", "--base", kBase.string(), "--pack", (t / "nowhere").string(),
                          "--out", (t / "out").string()});
  EXPECT_EQ(missing.status, 1) << missing.err;
  expect_names(missing, {(t / "nowhere").string()});
}

TEST(FileErrors, TruncatedPackTensorFile) {
  TempDir t;
  const fs::path p = t / "p";
  copy_dir(make_pack("bitdelta"), p);
  fs::resize_file(p / "pack.safetensors", fs::file_size(p / "pack.safetensors") / 2);
  auto r = apply(p, t);
  EXPECT_EQ(r.status, 1) << r.err;
  expect_names(r, {(p / "pack.safetensors").string()});
}

TEST(FileErrors, CorruptIndexIsAFormatErrorNamingTheIndex) {
  const fs::path src = fixture("llama/post_bf16_sharded");
  const std::string index = "model.safetensors.index.json";
  for (int variant = 0; variant < 3; ++variant) {
    TempDir t;
    const fs::path post = t / "post";
    copy_dir(src, post);
    std::string text = read_file(post / index);
    if (variant == 0) {
      text = text.substr(0, text.size() / 2);  // not JSON
    } else {
      json j = json::parse(text);
      if (variant == 1) j["weight_map"][kQ] = 3;  // a value that is not a file name
      if (variant == 2) j["weight_map"] = json::array();
      text = j.dump();
    }
    std::ofstream(post / index, std::ios::trunc) << text;
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"stats", "--base", kBase.string(), "--post", post.string()},
             {"edit", "--base", kBase.string(), "--post", post.string(), "--op", "dare:p=0.5",
              "--out", (t / "out").string()},
             {"inspect", post.string()}}) {
      auto r = run_cli(args);
      EXPECT_EQ(r.status, 1) << args[0] << " variant " << variant << ": " << r.err;
      expect_names(r, {(post / index).string()});
    }
    EXPECT_FALSE(fs::exists(t / "out"));
  }
}

// A corrupt config.json (not JSON, a duplicate key, a field of the wrong type) in an input
// checkpoint: every command that reads it exits 1 naming the file, and `edit` writes nothing.
TEST(FileErrors, CorruptConfigIsAFormatErrorNamingTheConfig) {
  for (int variant = 0; variant < 3; ++variant) {
    TempDir t;
    const fs::path post = t / "post";
    copy_dir(kPost, post);
    std::string text = read_file(post / "config.json");
    if (variant == 0) text = text.substr(0, text.size() / 2);
    if (variant == 1) text = "{\"model_type\": \"llama\", \"model_type\": \"qwen2\"}";
    if (variant == 2) {
      json j = json::parse(text);
      j["num_hidden_layers"] = "two";
      j["torch_dtype"] = 16;
      text = j.dump();
    }
    std::ofstream(post / "config.json", std::ios::trunc) << text;
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"edit", "--base", kBase.string(), "--post", post.string(), "--op", "scale:alpha=0.5",
              "--out", (t / "out").string()},
             {"inspect", post.string()}}) {
      auto r = run_cli(args);
      EXPECT_EQ(r.status, 1) << args[0] << " variant " << variant << ": " << r.err;
      expect_names(r, {"config.json"});
      EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    }
    EXPECT_FALSE(fs::exists(t / "out"));
  }
}
