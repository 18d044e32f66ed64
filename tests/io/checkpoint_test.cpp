// Checkpoints: the shared reference fixtures (single-file F32 and sharded BF16), config.json in
// both RoPE layouts, and the index rules on hand-made directories.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/checkpoint.h"
#include "io/config.h"
#include "util/error.h"

namespace fs = std::filesystem;
using deltaedit::Error;
using deltaedit::ErrorKind;
using namespace deltaedit::io;

namespace {

const fs::path kData = fs::path(DELTAEDIT_TEST_DATA) / "hf-reference";

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), std::streamsize(s.size()));
  out.close();
  ASSERT_TRUE(out.good()) << p;
}

template <class F>
std::optional<Error> error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-deltaedit exception: " << e.what();
  }
  return std::nullopt;
}

// The error has the kind, names `file` (as its file and in the message) and contains `needle`.
void check_error(const std::optional<Error>& e, ErrorKind kind, const std::string& file,
                 const std::string& needle = {}) {
  ASSERT_TRUE(e.has_value()) << "accepted, but must be rejected";
  const std::string what = e->what();
  EXPECT_EQ(e->kind(), kind) << what;
  EXPECT_EQ(e->file(), file) << what;
  EXPECT_NE(what.find(file), std::string::npos) << "message does not name " << file << ": " << what;
  if (!needle.empty()) {
    EXPECT_NE(what.find(needle), std::string::npos) << "message lacks '" << needle << "': " << what;
  }
}

uint32_t f32_bits_at(std::span<const std::byte> d, size_t i) {
  uint32_t b;
  std::memcpy(&b, d.data() + 4 * i, 4);
  return b;
}

// f32 -> bf16 to nearest, ties to even, written independently of the library: the nearer of the
// two bf16 neighbours (truncation and the next value up), compared in double. Finite inputs only.
uint16_t bf16_nearest_even(uint32_t bits) {
  auto value = [](uint32_t hi16) {
    uint32_t b = hi16 << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return std::fabs(double(f));
  };
  const uint32_t sign = bits & 0x80000000u, mag = bits & 0x7FFFFFFFu;
  float x;
  std::memcpy(&x, &mag, 4);
  const uint32_t lo = mag >> 16, hi = lo + 1;
  const double dlo = double(x) - value(lo);
  const double dhi = (hi == 0x7F80u ? std::ldexp(1.0, 128) : value(hi)) - double(x);
  const uint32_t pick = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1u) ? hi : lo);
  return uint16_t((sign >> 16) | pick);
}

// ---------------------------------------------------------------- reference fixtures

struct Model {
  const char* name;
  const char* arch;
  int64_t heads, kv_heads, head_dim;
  bool tied, qkv_bias;
  double theta;
  size_t shards;
  uint64_t n_params;
};

const Model kModels[] = {
    {"llama", "LlamaForCausalLM", 4, 2, 16, false, false, 500000.0, 4, 220480},
    {"qwen2", "Qwen2ForCausalLM", 4, 2, 16, true, true, 1000000.0, 3, 156736},
    {"mistral", "MistralForCausalLM", 4, 2, 32, false, false, 1000000.0, 4, 245056},
};

// The tensors a decoder of this shape must hold, with their shapes.
std::map<std::string, std::vector<int64_t>> expected_tensors(const Model& m) {
  const int64_t hidden = 64, inter = 176, vocab = 1000;
  std::map<std::string, std::vector<int64_t>> t;
  t["model.embed_tokens.weight"] = {vocab, hidden};
  t["model.norm.weight"] = {hidden};
  if (!m.tied) t["lm_head.weight"] = {vocab, hidden};
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t[p + "input_layernorm.weight"] = {hidden};
    t[p + "post_attention_layernorm.weight"] = {hidden};
    t[p + "self_attn.q_proj.weight"] = {m.heads * m.head_dim, hidden};
    t[p + "self_attn.k_proj.weight"] = {m.kv_heads * m.head_dim, hidden};
    t[p + "self_attn.v_proj.weight"] = {m.kv_heads * m.head_dim, hidden};
    t[p + "self_attn.o_proj.weight"] = {hidden, m.heads * m.head_dim};
    t[p + "mlp.gate_proj.weight"] = {inter, hidden};
    t[p + "mlp.up_proj.weight"] = {inter, hidden};
    t[p + "mlp.down_proj.weight"] = {hidden, inter};
    if (m.qkv_bias) {
      t[p + "self_attn.q_proj.bias"] = {m.heads * m.head_dim};
      t[p + "self_attn.k_proj.bias"] = {m.kv_heads * m.head_dim};
      t[p + "self_attn.v_proj.bias"] = {m.kv_heads * m.head_dim};
    }
  }
  return t;
}

void check_config(const Model& m, const ModelConfig& c) {
  EXPECT_EQ(c.architecture, m.arch);
  EXPECT_EQ(c.model_type, m.name);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 176);
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.num_attention_heads, m.heads);
  EXPECT_EQ(c.num_key_value_heads, m.kv_heads);
  EXPECT_EQ(c.head_dim, m.head_dim);
  EXPECT_EQ(c.tie_word_embeddings, m.tied);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope.theta, m.theta);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.pad_token_id.has_value());
  if (std::string(m.name) == "llama") {
    EXPECT_EQ(c.rope.type, "llama3");
    EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
    EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
    EXPECT_EQ(c.rope.original_max_position_embeddings, 64);
    EXPECT_EQ(c.bos_token_id, 0);
    EXPECT_EQ(c.eos_token_id, 1);
  } else {
    EXPECT_EQ(c.rope.type, "default");
  }
}

class Fixtures : public ::testing::TestWithParam<Model> {};

TEST_P(Fixtures, SingleFileF32) {
  const Model& m = GetParam();
  const auto want = expected_tensors(m);
  for (const char* variant : {"base", "post"}) {
    SCOPED_TRACE(variant);
    const fs::path dir = kData / m.name / variant;
    Checkpoint c = Checkpoint::open(dir);
    EXPECT_TRUE(c.is_directory());
    EXPECT_FALSE(c.is_sharded());
    ASSERT_EQ(c.files().size(), 1u);
    EXPECT_EQ(c.files()[0].path(), dir / "model.safetensors");
    EXPECT_TRUE(c.warnings().empty()) << c.warnings().front();
    EXPECT_EQ(std::set<std::string>(c.names().begin(), c.names().end()).size(), c.names().size());
    ASSERT_EQ(c.names().size(), want.size());
    for (const auto& [name, shape] : want) {
      ASSERT_TRUE(c.contains(name)) << name;
      EXPECT_EQ(c.info(name).shape, shape) << name;
      EXPECT_EQ(c.info(name).dtype, DType::F32) << name;
      EXPECT_EQ(c.data(name).size(), 4 * c.info(name).numel()) << name;
      EXPECT_EQ(c.file_of(name), "model.safetensors");
    }
    EXPECT_EQ(c.contains("lm_head.weight"), !m.tied);
    EXPECT_EQ(c.total_params(), m.n_params);
    EXPECT_EQ(c.total_bytes(), 4 * m.n_params);
    EXPECT_EQ(c.files()[0].header().metadata.at("format"), "pt");
    ASSERT_TRUE(c.config().has_value());
    check_config(m, *c.config());
    EXPECT_EQ(c.config()->torch_dtype, "float32");
    ASSERT_EQ(c.extra_files().size(), 1u);
    EXPECT_EQ(c.extra_files()[0], dir / "generation_config.json");
    // Names come in (file, offset) order.
    uint64_t prev_end = 0;
    for (const auto& n : c.names()) {
      EXPECT_EQ(c.info(n).begin, prev_end) << n;
      prev_end = c.info(n).end;
    }
    // The tensor bytes are the file's bytes at 8 + N + begin.
    const std::string raw = slurp(dir / "model.safetensors");
    uint64_t n_hdr = 0;
    for (int i = 7; i >= 0; --i) n_hdr = (n_hdr << 8) | uint8_t(raw[size_t(i)]);
    for (const auto& name : c.names()) {
      const auto d = c.data(name);
      ASSERT_EQ(std::memcmp(d.data(), raw.data() + 8 + n_hdr + c.info(name).begin, d.size()), 0) << name;
    }
  }
}

TEST_P(Fixtures, KnownValues) {
  // Values read from the files by a separate decoder (bit patterns of single f32 elements).
  const Model& m = GetParam();
  struct V { const char* variant; const char* tensor; size_t index; uint32_t bits; };
  std::vector<V> vals;
  const std::string name = m.name;
  if (name == "llama")
    vals = {{"base", "model.embed_tokens.weight", 197, 0xbd43156fu}, {"base", "model.norm.weight", 0, 0x3f800000u},
            {"base", "model.layers.1.mlp.down_proj.weight", 11263, 0x3a86a0b5u},
            {"post", "model.embed_tokens.weight", 197, 0xbd7e8206u}, {"post", "model.norm.weight", 0, 0x3f8e07d1u},
            {"post", "model.layers.1.mlp.down_proj.weight", 11263, 0xbc71b883u}};
  else if (name == "qwen2")
    vals = {{"base", "model.embed_tokens.weight", 197, 0xbba86a92u}, {"base", "model.norm.weight", 0, 0x3f800000u},
            {"base", "model.layers.1.mlp.down_proj.weight", 11263, 0x3d2d4554u},
            {"post", "model.embed_tokens.weight", 197, 0x3c06e4d6u}, {"post", "model.norm.weight", 0, 0x3f8f4d74u},
            {"post", "model.layers.1.mlp.down_proj.weight", 11263, 0x3c481408u}};
  else
    vals = {{"base", "model.embed_tokens.weight", 197, 0x3d13090du}, {"base", "model.norm.weight", 0, 0x3f800000u},
            {"base", "model.layers.1.mlp.down_proj.weight", 11263, 0xb9a79f12u},
            {"post", "model.embed_tokens.weight", 197, 0x3d53e4a8u}, {"post", "model.norm.weight", 0, 0x3f8d5596u},
            {"post", "model.layers.1.mlp.down_proj.weight", 11263, 0x3cc1fd0eu}};
  Checkpoint base = Checkpoint::open(kData / m.name / "base");
  Checkpoint post = Checkpoint::open(kData / m.name / "post");
  Checkpoint bf16 = Checkpoint::open(kData / m.name / "post_bf16_sharded");
  for (const V& v : vals) {
    SCOPED_TRACE(std::string(v.variant) + " " + v.tensor);
    const Checkpoint& c = std::string(v.variant) == "base" ? base : post;
    EXPECT_EQ(f32_bits_at(c.data(v.tensor), v.index), v.bits);
    if (std::string(v.variant) == "post") {
      uint16_t h;
      std::memcpy(&h, bf16.data(v.tensor).data() + 2 * v.index, 2);
      EXPECT_EQ(h, bf16_nearest_even(v.bits));
    }
  }
}

TEST_P(Fixtures, ShardedBf16IsPostRoundedToNearestEven) {
  const Model& m = GetParam();
  const fs::path dir = kData / m.name / "post_bf16_sharded";
  Checkpoint post = Checkpoint::open(kData / m.name / "post");
  Checkpoint c = Checkpoint::open(dir);
  EXPECT_TRUE(c.is_directory());
  EXPECT_TRUE(c.is_sharded());
  EXPECT_EQ(c.files().size(), m.shards);
  EXPECT_TRUE(c.warnings().empty()) << c.warnings().front();
  EXPECT_EQ(c.total_params(), m.n_params);
  EXPECT_EQ(c.total_bytes(), 2 * m.n_params);
  ASSERT_TRUE(c.config().has_value());
  check_config(m, *c.config());
  EXPECT_EQ(c.config()->torch_dtype, "bfloat16");
  ASSERT_EQ(c.extra_files().size(), 1u);
  EXPECT_EQ(c.extra_files()[0], dir / "generation_config.json");

  // Every tensor sits in the shard the index names (index read separately here).
  const auto index = nlohmann::json::parse(slurp(dir / "model.safetensors.index.json"));
  const auto& wm = index.at("weight_map");
  ASSERT_EQ(wm.size(), c.names().size());
  for (auto it = wm.begin(); it != wm.end(); ++it) {
    ASSERT_TRUE(c.contains(it.key())) << it.key();
    EXPECT_EQ(c.file_of(it.key()), it.value().get<std::string>()) << it.key();
  }
  EXPECT_EQ(index.at("metadata").at("total_size").get<uint64_t>(), c.total_bytes());

  // The same tensors as post, in BF16, each element post rounded to nearest-even.
  ASSERT_EQ(std::set<std::string>(c.names().begin(), c.names().end()),
            std::set<std::string>(post.names().begin(), post.names().end()));
  EXPECT_EQ(c.contains("lm_head.weight"), !m.tied);
  uint64_t checked = 0;
  for (const auto& name : post.names()) {
    SCOPED_TRACE(name);
    const TensorInfo& a = post.info(name);
    const TensorInfo& b = c.info(name);
    EXPECT_EQ(b.dtype, DType::BF16);
    EXPECT_EQ(b.shape, a.shape);
    const auto da = post.data(name), db = c.data(name);
    ASSERT_EQ(db.size(), da.size() / 2);
    uint64_t bad = 0;
    for (size_t i = 0; i < a.numel(); ++i) {
      uint16_t h;
      std::memcpy(&h, db.data() + 2 * i, 2);
      bad += h != bf16_nearest_even(f32_bits_at(da, i));
    }
    EXPECT_EQ(bad, 0u);
    checked += a.numel();
  }
  EXPECT_EQ(checked, m.n_params);
}

TEST_P(Fixtures, ReferenceFileOpensAsASingleFile) {
  const Model& m = GetParam();
  const fs::path p = kData / m.name / "ref.safetensors";
  Checkpoint c = Checkpoint::open(p);
  EXPECT_FALSE(c.is_directory());
  EXPECT_FALSE(c.is_sharded());
  EXPECT_FALSE(c.config().has_value());
  EXPECT_TRUE(c.extra_files().empty());
  ASSERT_TRUE(c.contains("input_ids"));
  EXPECT_EQ(c.info("input_ids").dtype, DType::I64);
  EXPECT_EQ(c.info("input_ids").shape, (std::vector<int64_t>{2, 24}));
  EXPECT_EQ(c.info("logits_post").shape, (std::vector<int64_t>{2, 24, 1000}));
  EXPECT_EQ(c.file_of("input_ids"), "ref.safetensors");
  // Token ids are in the vocabulary.
  const auto ids = c.data("input_ids");
  for (size_t i = 0; i < 48; ++i) {
    int64_t v;
    std::memcpy(&v, ids.data() + 8 * i, 8);
    EXPECT_GE(v, 0);
    EXPECT_LT(v, 1000);
  }
}

TEST_P(Fixtures, TiedModelsHoldNoHead) {
  const Model& m = GetParam();
  for (const char* variant : {"base", "post", "post_bf16_sharded"}) {
    Checkpoint c = Checkpoint::open(kData / m.name / variant);
    EXPECT_EQ(c.config()->tie_word_embeddings, m.tied) << variant;
    EXPECT_EQ(c.contains("lm_head.weight"), !m.tied) << variant;
  }
}

INSTANTIATE_TEST_SUITE_P(Reference, Fixtures, ::testing::ValuesIn(kModels),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------- config.json

TEST(Config, OlderRopeLayout) {
  // Released Llama-3 checkpoints: rope_theta at the top, rope_scaling beside it.
  const std::string text = R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]
  })";
  ModelConfig c = parse_config(text, "old/config.json");
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.head_dim, 128);  // hidden / heads when not given
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_id, 128001);  // the first of a list
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(Config, BothLayoutsGiveTheSameRope) {
  const std::string common = R"("architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 1000,)";
  ModelConfig older = parse_config("{" + common + R"("rope_theta": 500000.0, "rope_scaling": {"factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_type": "llama3"}})",
                                   "a.json");
  ModelConfig newer = parse_config("{" + common + R"("rope_parameters": {"rope_theta": 500000.0, "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64, "rope_type": "llama3"}})",
                                   "b.json");
  for (const ModelConfig* c : {&older, &newer}) {
    EXPECT_DOUBLE_EQ(c->rope.theta, 500000.0);
    EXPECT_EQ(c->rope.type, "llama3");
    EXPECT_DOUBLE_EQ(c->rope.factor, 8.0);
    EXPECT_DOUBLE_EQ(c->rope.low_freq_factor, 1.0);
    EXPECT_DOUBLE_EQ(c->rope.high_freq_factor, 4.0);
    EXPECT_EQ(c->rope.original_max_position_embeddings, 64);
  }
  // Older "type" key, linear scaling.
  ModelConfig lin = parse_config("{" + common + R"("rope_theta": 10000, "rope_scaling": {"type": "linear", "factor": 2.0}})",
                                 "c.json");
  EXPECT_EQ(lin.rope.type, "linear");
  EXPECT_DOUBLE_EQ(lin.rope.factor, 2.0);
  EXPECT_DOUBLE_EQ(lin.rope.theta, 10000.0);
  // No scaling at all: theta alone.
  ModelConfig plain = parse_config("{" + common + R"("rope_theta": 1000000.0, "rope_scaling": null})", "d.json");
  EXPECT_EQ(plain.rope.type, "default");
  EXPECT_DOUBLE_EQ(plain.rope.theta, 1000000.0);
  EXPECT_DOUBLE_EQ(plain.rope.factor, 1.0);
}

TEST(Config, SlidingWindow) {
  const std::string base = R"({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4,)";
  EXPECT_EQ(parse_config(base + R"("sliding_window": 4096})", "a.json").sliding_window, 4096);
  EXPECT_FALSE(parse_config(base + R"("sliding_window": 4096, "use_sliding_window": false})", "a.json").sliding_window);
  EXPECT_FALSE(parse_config(base + R"("sliding_window": null})", "a.json").sliding_window);
}

TEST(Config, Rejections) {
  struct Case { const char* text; const char* needle; };
  const Case cases[] = {
      {R"({"hidden_size": 64, "hidden_size": 64})", "hidden_size"},
      {R"({"rope_parameters": {"rope_theta": 1.0, "rope_theta": 2.0}})", "rope_theta"},
      {R"({"hidden_size": "64"})", "hidden_size"},
      {R"({"hidden_size": 64.5})", "hidden_size"},
      {R"({"num_hidden_layers": -2})", "num_hidden_layers"},
      {R"({"tie_word_embeddings": "yes"})", "tie_word_embeddings"},
      {R"({"architectures": "LlamaForCausalLM"})", "architectures"},
      {R"({"rms_norm_eps": "small"})", "rms_norm_eps"},
      {R"({"rope_parameters": []})", "rope"},
      {R"([])", ""},
      {R"({"hidden_size": 64,})", ""},
      {"{}\x01", ""},
      {"{\"model_type\": \"\xC3\x28\"}", ""},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.text);
    check_error(error_of([&] { parse_config(k.text, "bad/config.json"); }), ErrorKind::Format, "bad/config.json",
                k.needle);
  }
}

TEST(Config, LoadFromMissingFileIsIo) {
  const fs::path p = fs::temp_directory_path() / ("deltaedit-no-config-" + std::to_string(::getpid()) + ".json");
  check_error(error_of([&] { load_config(p); }), ErrorKind::Io, p.string());
}

// ---------------------------------------------------------------- hand-made directories

struct T {
  std::string name, dtype;
  std::vector<int64_t> shape;
  unsigned elem_bytes;
};

uint64_t numel(const std::vector<int64_t>& s) {
  uint64_t n = 1;
  for (auto d : s) n *= uint64_t(d);
  return n;
}

// A valid safetensors file of these tensors, contiguous in the given order, data a byte pattern.
std::string safetensors_bytes(const std::vector<T>& ts) {
  nlohmann::json h = nlohmann::json::object();
  h["__metadata__"] = {{"format", "pt"}};
  uint64_t off = 0;
  for (const T& t : ts) {
    const uint64_t n = numel(t.shape) * t.elem_bytes;
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string hdr = h.dump();
  while (hdr.size() % 8) hdr += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char(uint8_t(uint64_t(hdr.size()) >> (8 * i)));
  out += hdr;
  for (uint64_t i = 0; i < off; ++i) out += char(uint8_t(i * 13 + 5));
  return out;
}

class Dirs : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() /
            ("deltaedit-ckpt-" + std::string(info->name()) + "-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    model_ = root_ / "model";
    fs::create_directories(model_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // Two shards: a = {x.weight F32[2,3], y.bias F32[3]}, b = {z.weight BF16[4]}.
  void make_two_shards(std::optional<uint64_t> total_size = uint64_t(24 + 12 + 8)) {
    spit(model_ / shard_a_, safetensors_bytes({{"x.weight", "F32", {2, 3}, 4}, {"y.bias", "F32", {3}, 4}}));
    spit(model_ / shard_b_, safetensors_bytes({{"z.weight", "BF16", {4}, 2}}));
    write_index({{"x.weight", shard_a_}, {"y.bias", shard_a_}, {"z.weight", shard_b_}}, total_size);
  }
  void write_index(const std::map<std::string, std::string>& wm, std::optional<uint64_t> total_size) {
    nlohmann::json j;
    j["metadata"] = nlohmann::json::object();
    if (total_size) j["metadata"]["total_size"] = *total_size;
    j["weight_map"] = wm;
    spit(model_ / kIndexName, j.dump(2) + "\n");
  }
  std::string index_path() const { return (model_ / kIndexName).string(); }

  fs::path root_, model_;
  const std::string shard_a_ = "model-00001-of-00002.safetensors";
  const std::string shard_b_ = "model-00002-of-00002.safetensors";
};

TEST_F(Dirs, ValidShardedDirectoryWithExtraFiles) {
  make_two_shards();
  spit(model_ / "config.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
                                  "num_attention_heads": 2, "tie_word_embeddings": true})");
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json",
                        "chat_template.jinja"})
    spit(model_ / f, "{}");
  fs::create_directories(model_ / "subdir");
  spit(model_ / "subdir" / "tokenizer.json", "{}");

  Checkpoint c = Checkpoint::open(model_);
  EXPECT_TRUE(c.is_directory());
  EXPECT_TRUE(c.is_sharded());
  ASSERT_EQ(c.files().size(), 2u);
  EXPECT_TRUE(c.warnings().empty()) << c.warnings().front();
  EXPECT_EQ(c.names().size(), 3u);
  EXPECT_EQ(c.file_of("x.weight"), shard_a_);
  EXPECT_EQ(c.file_of("y.bias"), shard_a_);
  EXPECT_EQ(c.file_of("z.weight"), shard_b_);
  EXPECT_EQ(c.info("z.weight").dtype, DType::BF16);
  EXPECT_EQ(c.total_bytes(), 44u);
  EXPECT_EQ(c.total_params(), 13u);
  // Bytes of z.weight: the pattern restarted at the beginning of shard b's data.
  const auto z = c.data("z.weight");
  ASSERT_EQ(z.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(std::to_integer<uint8_t>(z[i]), uint8_t(i * 13 + 5));
  ASSERT_TRUE(c.config().has_value());
  EXPECT_TRUE(c.config()->tie_word_embeddings);
  EXPECT_EQ(c.config()->head_dim, 4);
  const std::vector<fs::path> extra = {model_ / "chat_template.jinja", model_ / "generation_config.json",
                                       model_ / "special_tokens_map.json", model_ / "tokenizer.json",
                                       model_ / "tokenizer_config.json"};
  EXPECT_EQ(c.extra_files(), extra);
  const auto inputs = c.input_paths();
  for (const fs::path& p : {model_ / shard_a_, model_ / shard_b_, model_ / kIndexName, model_ / "config.json"})
    EXPECT_NE(std::find(inputs.begin(), inputs.end(), p), inputs.end()) << p;
  EXPECT_THROW(c.info("nope"), Error);
}

TEST_F(Dirs, TotalSizeMismatchIsOnlyAWarning) {
  make_two_shards(45);
  Checkpoint c = Checkpoint::open(model_);
  EXPECT_EQ(c.names().size(), 3u);
  ASSERT_EQ(c.warnings().size(), 1u);
  EXPECT_NE(c.warnings()[0].find("total_size"), std::string::npos) << c.warnings()[0];
  // No total_size at all: nothing to warn about.
  make_two_shards(std::nullopt);
  EXPECT_TRUE(Checkpoint::open(model_).warnings().empty());
}

TEST_F(Dirs, ShardNamesMustBePlainSafetensorsFileNames) {
  // Each name points at a file that exists and is a valid shard holding the mapped tensor, so
  // only the naming rule can refuse it.
  const std::string shard = safetensors_bytes({{"w", "F32", {2}, 4}});
  fs::create_directories(model_ / "sub");
  spit(root_ / "outside.safetensors", shard);
  spit(model_ / "sub" / "inner.safetensors", shard);
  const fs::path abs = root_ / "abs.safetensors";
  spit(abs, shard);
  std::vector<std::string> names = {abs.string(), "../outside.safetensors", "sub/inner.safetensors",
                                    "sub/../../outside.safetensors", "./x.safetensors"};
  for (const char* n : {"sub\\x.safetensors", "..\\x.safetensors", "C:x.safetensors", "c:\\x.safetensors",
                        "model-00001-of-00001.bin", "model-00001-of-00001.pt", "model-00001-of-00001.safetensors.bak",
                        "model-00001-of-00001.json", "model.safetensors.index.json"}) {
    names.push_back(n);
    spit(model_ / n, shard);  // a literal file of that name in the directory
  }
  spit(model_ / "x.safetensors", shard);
  names.push_back("");
  for (const auto& n : names) {
    SCOPED_TRACE(n);
    write_index({{"w", n}}, std::nullopt);
    check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, index_path());
    check_error(error_of([&] { parse_index(R"({"weight_map": {"w": )" + nlohmann::json(n).dump() + "}}", "i.json"); }),
                ErrorKind::Format, "i.json");
    check_error(error_of([&] { check_shard_name(n, "i.json"); }), ErrorKind::Format, "i.json");
  }
  // The control: a plain name is accepted.
  write_index({{"w", "x.safetensors"}}, std::nullopt);
  EXPECT_NO_THROW(Checkpoint::open(model_));
  EXPECT_NO_THROW(check_shard_name("model-00001-of-00002.safetensors", "i.json"));
}

TEST_F(Dirs, MappedTensorMissingFromItsShard) {
  make_two_shards();
  write_index({{"x.weight", shard_a_}, {"y.bias", shard_a_}, {"z.weight", shard_b_}, {"ghost.weight", shard_b_}},
              std::nullopt);
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, index_path(), "ghost.weight");
}

TEST_F(Dirs, ShardTensorNotMapped) {
  make_two_shards();
  write_index({{"x.weight", shard_a_}, {"z.weight", shard_b_}}, std::nullopt);
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, (model_ / shard_a_).string(), "y.bias");
}

TEST_F(Dirs, ShardTensorMappedToAnotherShard) {
  // z.weight is in both shards; the index maps it to b, so a holds a tensor not mapped to it.
  spit(model_ / shard_a_, safetensors_bytes({{"x.weight", "F32", {2, 3}, 4}, {"z.weight", "BF16", {4}, 2}}));
  spit(model_ / shard_b_, safetensors_bytes({{"z.weight", "BF16", {4}, 2}}));
  write_index({{"x.weight", shard_a_}, {"z.weight", shard_b_}}, std::nullopt);
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, (model_ / shard_a_).string(), "z.weight");
}

TEST_F(Dirs, MissingShardFile) {
  make_two_shards();
  fs::remove(model_ / shard_b_);
  auto e = error_of([&] { Checkpoint::open(model_); });
  ASSERT_TRUE(e);
  EXPECT_EQ(e->kind(), ErrorKind::Io) << e->what();
  EXPECT_NE(std::string(e->what()).find(shard_b_), std::string::npos) << e->what();
}

TEST_F(Dirs, CorruptShardNamesTheShard) {
  make_two_shards();
  std::string b = slurp(model_ / shard_b_);
  spit(model_ / shard_b_, b + "x");
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, (model_ / shard_b_).string());
}

TEST_F(Dirs, IndexItselfMustBeValid) {
  make_two_shards();
  struct Case { std::string text, needle; };
  const std::vector<Case> cases = {
      {R"({"weight_map": {"x.weight": ")" + shard_a_ + R"(", "x.weight": ")" + shard_b_ + R"("}})", "x.weight"},
      {R"({"metadata": {}, "metadata": {}, "weight_map": {"x.weight": ")" + shard_a_ + R"("}})", "metadata"},
      {"[]", ""},
      {R"({"metadata": {}})", "weight_map"},
      {R"({"weight_map": []})", "weight_map"},
      {R"({"weight_map": {}})", "weight_map"},
      {R"({"weight_map": {"x.weight": 1}})", "x.weight"},
      {R"({"weight_map": {"x.weight": ")" + shard_a_ + R"("}} x)", ""},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.text);
    spit(model_ / kIndexName, k.text);
    check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, index_path(), k.needle);
    check_error(error_of([&] { parse_index(k.text, "i.json"); }), ErrorKind::Format, "i.json", k.needle);
  }
}

TEST_F(Dirs, ParseIndexReadsTheMap) {
  IndexFile idx = parse_index(
      R"({"metadata": {"total_size": 44, "total_parameters": 13}, "weight_map": {"b": "model-00002-of-00002.safetensors", "a": "model-00001-of-00002.safetensors"}})",
      "i.json");
  EXPECT_EQ(idx.total_size, 44u);
  ASSERT_EQ(idx.weight_map.size(), 2u);
  EXPECT_EQ(idx.weight_map.at("a"), "model-00001-of-00002.safetensors");
  EXPECT_EQ(idx.weight_map.at("b"), "model-00002-of-00002.safetensors");
  EXPECT_FALSE(parse_index(R"({"weight_map": {"a": "a.safetensors"}})", "i.json").total_size.has_value());
  EXPECT_EQ(shard_file_name(1, 4), "model-00001-of-00004.safetensors");
  EXPECT_EQ(shard_file_name(12, 123), "model-00012-of-00123.safetensors");
}

TEST_F(Dirs, UnreferencedShardIsAWarning) {
  make_two_shards();
  spit(model_ / "model-00003-of-00003.safetensors", safetensors_bytes({{"stray", "F32", {1}, 4}}));
  Checkpoint c = Checkpoint::open(model_);
  EXPECT_FALSE(c.contains("stray"));
  ASSERT_EQ(c.warnings().size(), 1u);
  EXPECT_NE(c.warnings()[0].find("model-00003-of-00003.safetensors"), std::string::npos) << c.warnings()[0];
}

TEST_F(Dirs, SingleFileDirectory) {
  spit(model_ / "model.safetensors", safetensors_bytes({{"w", "F16", {3}, 2}}));
  spit(model_ / "tokenizer.json", "{}");
  Checkpoint c = Checkpoint::open(model_);
  EXPECT_FALSE(c.is_sharded());
  EXPECT_EQ(c.names(), std::vector<std::string>{"w"});
  EXPECT_FALSE(c.config().has_value());
  EXPECT_EQ(c.extra_files(), std::vector<fs::path>{model_ / "tokenizer.json"});
  // Opening the file itself works too.
  Checkpoint f = Checkpoint::open(model_ / "model.safetensors");
  EXPECT_FALSE(f.is_directory());
  EXPECT_EQ(f.names(), std::vector<std::string>{"w"});
}

TEST_F(Dirs, DirectoryWithoutWeights) {
  spit(model_ / "config.json", R"({"model_type": "llama"})");
  spit(model_ / "tokenizer.json", "{}");
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, model_.string(), "model.safetensors");
  // Pickle weights only: the message says what to do.
  spit(model_ / "pytorch_model.bin", "not really");
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, model_.string(), "pytorch_model.bin");
  // An empty directory.
  fs::create_directories(root_ / "empty");
  check_error(error_of([&] { Checkpoint::open(root_ / "empty"); }), ErrorKind::Format, (root_ / "empty").string());
}

TEST_F(Dirs, MissingPathIsIo) {
  check_error(error_of([&] { Checkpoint::open(root_ / "nowhere"); }), ErrorKind::Io, (root_ / "nowhere").string());
}

TEST_F(Dirs, GitLfsPointerInsteadOfWeights) {
  const std::string ptr =
      "version https://git-lfs.github.com/spec/v1\n"
      "oid sha256:2b0c7a4c9e3d5f6a1b8e9d0c7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a\n"
      "size 16060522496\n";
  spit(model_ / "model.safetensors", ptr);
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, (model_ / "model.safetensors").string(),
              "git-lfs");
  // The same as a shard.
  fs::remove(model_ / "model.safetensors");
  make_two_shards();
  spit(model_ / shard_b_, ptr);
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, (model_ / shard_b_).string(), "git-lfs");
}

TEST_F(Dirs, InvalidConfigNamesTheConfig) {
  spit(model_ / "model.safetensors", safetensors_bytes({{"w", "F32", {1}, 4}}));
  spit(model_ / "config.json", R"({"hidden_size": 1, "hidden_size": 2})");
  check_error(error_of([&] { Checkpoint::open(model_); }), ErrorKind::Format, (model_ / "config.json").string());
}

}  // namespace
