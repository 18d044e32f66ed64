// PEFT LoRA adapters read as W_post over a base: closed forms computed here in f64 from the
// factors the test writes (linear, rsLoRA, rank/alpha patterns, fan_in_fan_out, embedding LoRA,
// modules_to_save), the rounding rule, and every refusal.
#include "io/peft.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "../engine/engine_test_util.h"
#include "io/convert.h"
#include "util/error.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

const std::string P = "base_model.model.";

struct Fixture {
  TempDir t;
  fs::path base_dir = t / "base", adapter = t / "adapter";
  std::vector<SynthTensor> base;
  std::vector<SynthTensor> factors;

  Fixture() {
    fs::create_directories(base_dir);
    fs::create_directories(adapter);
    base = {
        {"model.layers.0.self_attn.q_proj.weight", io::DType::F32, {6, 5}, random_values(30, 1)},
        {"model.layers.0.self_attn.v_proj.weight", io::DType::F32, {4, 5}, random_values(20, 2)},
        {"model.layers.1.self_attn.q_proj.weight", io::DType::F32, {6, 5}, random_values(30, 3)},
        {"model.embed_tokens.weight", io::DType::F32, {10, 4}, random_values(40, 4)},
        {"lm_head.weight", io::DType::BF16, {10, 4}, random_values(40, 5)},
        {"model.norm.weight", io::DType::F32, {4}, random_values(4, 6)},
        {"transformer.h.0.attn.c_attn.weight", io::DType::F32, {5, 7}, random_values(35, 7)},
    };
  }
  void write_base() { write_safetensors(base_dir / "model.safetensors", base); }
  void write_adapter(const std::string& config) {
    write_base();
    std::ofstream(adapter / "adapter_config.json") << config;
    write_safetensors(adapter / "adapter_model.safetensors", factors);
  }
  // A linear LoRA pair for `module` with a given rank and shapes out×in.
  void lora(const std::string& module, int64_t r, int64_t out, int64_t in, uint32_t seed) {
    factors.push_back({P + module + ".lora_A.weight",
                       io::DType::F32,
                       {r, in},
                       random_values(size_t(r * in), seed)});
    factors.push_back({P + module + ".lora_B.weight",
                       io::DType::F32,
                       {out, r},
                       random_values(size_t(out * r), seed + 100)});
  }
  const SynthTensor& get(const std::vector<SynthTensor>& v, const std::string& name) const {
    for (const auto& x : v)
      if (x.name == name) return x;
    throw std::runtime_error("no " + name);
  }
  // Closed form in f64: W + s·B·A (transposed: W[i][o] + s·Σ_t B[o][t]·A[t][i]).
  std::vector<double> expected(const std::string& module, double s, bool transposed) const {
    const auto& w = get(base, module + ".weight");
    const auto& a = get(factors, P + module + ".lora_A.weight");
    const auto& b = get(factors, P + module + ".lora_B.weight");
    const int64_t rows = w.shape[0], cols = w.shape[1], r = a.shape[0];
    std::vector<double> out(size_t(rows * cols));
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        double acc = 0;
        for (int64_t t = 0; t < r; ++t)
          acc += transposed ? double(b.values[size_t(j * r + t)]) * a.values[size_t(t * rows + i)]
                            : double(b.values[size_t(i * r + t)]) * a.values[size_t(t * cols + j)];
        out[size_t(i * cols + j)] = double(w.values[size_t(i * cols + j)]) + s * acc;
      }
    return out;
  }
};

std::vector<float> decode(const io::TensorSource& src, const std::string& name) {
  const auto& ti = src.info(name);
  std::vector<float> v(ti.numel());
  io::to_f32(src.data(name), ti.dtype, v);
  return v;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << what << " [" << i << "]";
}

std::string config(const std::string& extra) {
  return std::string(
             R"({"peft_type": "LORA", "bias": "none", "use_dora": false, "fan_in_fan_out": false)") +
         extra + "}";
}

// The error kind and a substring of the message of opening the adapter.
void expect_refused(Fixture& f, ErrorKind kind, const std::string& needle) {
  auto base = io::Checkpoint::open(f.base_dir);
  try {
    io::AdapterSource::open(f.adapter, base);
    FAIL() << "accepted; expected an error containing: " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(Peft, LinearLoraClosedFormAndUntouchedTensorsAreTheBase) {
  Fixture f;
  f.lora("model.layers.0.self_attn.q_proj", 2, 6, 5, 10);
  f.lora("model.layers.0.self_attn.v_proj", 2, 4, 5, 20);
  f.write_adapter(config(R"(, "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"])"));
  auto base = io::Checkpoint::open(f.base_dir);
  auto src = io::open_post(f.adapter, base);
  ASSERT_NE(dynamic_cast<io::AdapterSource*>(src.get()), nullptr);
  // s = alpha / r = 2
  expect_close(decode(*src, "model.layers.0.self_attn.q_proj.weight"),
               f.expected("model.layers.0.self_attn.q_proj", 2.0, false), "q_proj");
  expect_close(decode(*src, "model.layers.0.self_attn.v_proj.weight"),
               f.expected("model.layers.0.self_attn.v_proj", 2.0, false), "v_proj");
  // Every other tensor is the base's, byte for byte (the mapped bytes themselves).
  for (const auto& n : base.names()) {
    if (n.find("layers.0.self_attn") != std::string::npos) continue;
    EXPECT_EQ(src->data(n).data(), base.data(n).data()) << n;
    EXPECT_EQ(src->formed_bytes(n), 0u) << n;
  }
  // The formed tensor, the f32 factors (2×5 and 6×2) and two row blocks of f32 while forming.
  EXPECT_EQ(src->formed_bytes("model.layers.0.self_attn.q_proj.weight"),
            30u * 4 + 4 * (10 + 12) + 2 * 4 * io::AdapterSource::kFormRows * 5);
  EXPECT_EQ(src->names(), base.names());
  // Formed once, dropped by release, formed again identically.
  const auto first = decode(*src, "model.layers.0.self_attn.q_proj.weight");
  src->release("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(decode(*src, "model.layers.0.self_attn.q_proj.weight"), first);
}

TEST(Peft, RsLoraScalesByAlphaOverSqrtR) {
  Fixture f;
  f.lora("model.layers.0.self_attn.q_proj", 4, 6, 5, 11);
  f.write_adapter(
      config(R"(, "r": 4, "lora_alpha": 6, "use_rslora": true, "target_modules": ["q_proj"])"));
  auto base = io::Checkpoint::open(f.base_dir);
  auto src = io::open_post(f.adapter, base);
  expect_close(decode(*src, "model.layers.0.self_attn.q_proj.weight"),
               f.expected("model.layers.0.self_attn.q_proj", 6.0 / 2.0, false), "rslora");
}

TEST(Peft, RankAndAlphaPatternsFollowPeftMatching) {
  // The first key (file order) whose regex (.*\.)?(key)$ matches the whole module name wins.
  Fixture f;
  f.lora("model.layers.0.self_attn.q_proj", 3, 6, 5, 12);
  f.lora("model.layers.1.self_attn.q_proj", 1, 6, 5, 13);
  f.lora("model.layers.0.self_attn.v_proj", 2, 4, 5, 14);
  f.write_adapter(config(
      R"(, "r": 2, "lora_alpha": 2, "target_modules": ["q_proj", "v_proj"],
          "rank_pattern": {"layers\\.1\\.self_attn\\.q_proj": 1, "q_proj": 3, "^model.layers.1.self_attn.q_proj": 5},
          "alpha_pattern": {"self_attn.q_proj": 12, "proj": 100})"));
  auto base = io::Checkpoint::open(f.base_dir);
  auto src = io::AdapterSource::open(f.adapter, base);
  const auto& c = src->config_file();
  EXPECT_EQ(c.rank_for("model.layers.0.self_attn.q_proj"), 3);
  EXPECT_EQ(c.rank_for("model.layers.1.self_attn.q_proj"),
            1);  // first matching key, not the later "^..." one
  EXPECT_EQ(c.rank_for("model.layers.0.self_attn.v_proj"), 2);  // no key matches: r
  EXPECT_EQ(c.alpha_for("model.layers.0.self_attn.q_proj"), 12);
  EXPECT_EQ(c.alpha_for("model.layers.0.self_attn.v_proj"),
            2);  // "proj" needs a '.' boundary: no match
  EXPECT_FALSE(c.rank_for("model.layers.0.self_attn.xq_proj") ==
               3);  // "q_proj" needs a '.' before it
  expect_close(decode(*src, "model.layers.0.self_attn.q_proj.weight"),
               f.expected("model.layers.0.self_attn.q_proj", 12.0 / 3.0, false), "layer 0 q");
  expect_close(decode(*src, "model.layers.1.self_attn.q_proj.weight"),
               f.expected("model.layers.1.self_attn.q_proj", 12.0 / 1.0, false), "layer 1 q");
  expect_close(decode(*src, "model.layers.0.self_attn.v_proj.weight"),
               f.expected("model.layers.0.self_attn.v_proj", 2.0 / 2.0, false), "v");
}

TEST(Peft, FanInFanOutTransposesTheDelta) {
  Fixture f;  // GPT-2 Conv1D: the weight is stored in×out (5×7); A is r×in, B is out×r
  f.lora("transformer.h.0.attn.c_attn", 2, 7, 5, 15);
  f.write_adapter(
      R"({"peft_type": "LORA", "r": 2, "lora_alpha": 8, "fan_in_fan_out": true, "target_modules": ["c_attn"]})");
  auto base = io::Checkpoint::open(f.base_dir);
  auto src = io::open_post(f.adapter, base);
  expect_close(decode(*src, "transformer.h.0.attn.c_attn.weight"),
               f.expected("transformer.h.0.attn.c_attn", 4.0, true), "c_attn");
}

TEST(Peft, EmbeddingLoraUsesTheTransposedConvention) {
  Fixture
      f;  // embed_tokens 10×4: lora_embedding_A is r×vocab (3×10), lora_embedding_B is dim×r (4×3)
  const auto a = random_values(30, 16), b = random_values(12, 17);
  f.factors.push_back({P + "model.embed_tokens.lora_embedding_A", io::DType::F32, {3, 10}, a});
  f.factors.push_back({P + "model.embed_tokens.lora_embedding_B", io::DType::F32, {4, 3}, b});
  f.write_adapter(config(R"(, "r": 3, "lora_alpha": 6, "target_modules": ["embed_tokens"])"));
  auto base = io::Checkpoint::open(f.base_dir);
  auto src = io::open_post(f.adapter, base);
  const auto& w = f.get(f.base, "model.embed_tokens.weight");
  std::vector<double> want(40);
  for (int v = 0; v < 10; ++v)
    for (int d = 0; d < 4; ++d) {
      double acc = 0;
      for (int t = 0; t < 3; ++t) acc += double(b[size_t(d * 3 + t)]) * a[size_t(t * 10 + v)];
      want[size_t(v * 4 + d)] = w.values[size_t(v * 4 + d)] + 2.0 * acc;
    }
  expect_close(decode(*src, "model.embed_tokens.weight"), want, "embedding");
}

TEST(Peft, ModulesToSaveReplaceTheBaseInItsDtype) {
  Fixture f;  // lm_head is BF16 in the base, stored F32 in the adapter: converted, nearest-even
  const auto head = random_values(40, 18);
  f.factors.push_back({P + "lm_head.weight", io::DType::F32, {10, 4}, head});
  f.lora("model.layers.0.self_attn.q_proj", 2, 6, 5, 19);
  f.write_adapter(config(
      R"(, "r": 2, "lora_alpha": 2, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"])"));
  auto base = io::Checkpoint::open(f.base_dir);
  auto src = io::open_post(f.adapter, base);
  EXPECT_EQ(src->info("lm_head.weight").dtype, io::DType::BF16);
  const auto got = src->data("lm_head.weight");
  ASSERT_EQ(got.size(), 80u);
  for (size_t i = 0; i < 40; ++i) {
    uint16_t h;
    std::memcpy(&h, got.data() + 2 * i, 2);
    EXPECT_EQ(h, io::f32_to_bf16(head[i])) << i;
  }
}

TEST(Peft, Bf16BaseIsRoundedOnceFromTheF32Sum) {
  // Factors of small dyadic values make B·A and s·B·A exact in f32, so the only rounding is the
  // final one: W_post = bf16(W + s·B·A) with W + s·B·A exact in f32.
  Fixture f;
  f.base[1].dtype = io::DType::BF16;  // v_proj 4×5
  for (auto& v : f.base[1].values) v = io::bf16_to_f32(io::f32_to_bf16(v));
  std::vector<float> a(10), b(8);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(int(i % 5) - 2) * 0.125f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(int(i % 3) - 1) * 0.0625f * float(1 + i % 2);
  f.factors.push_back(
      {P + "model.layers.0.self_attn.v_proj.lora_A.weight", io::DType::BF16, {2, 5}, a});
  f.factors.push_back(
      {P + "model.layers.0.self_attn.v_proj.lora_B.weight", io::DType::F16, {4, 2}, b});
  f.write_adapter(config(R"(, "r": 2, "lora_alpha": 6, "target_modules": ["v_proj"])"));
  auto base = io::Checkpoint::open(f.base_dir);
  auto src = io::open_post(f.adapter, base);
  const auto got = src->data("model.layers.0.self_attn.v_proj.weight");
  ASSERT_EQ(src->info("model.layers.0.self_attn.v_proj.weight").dtype, io::DType::BF16);
  const auto& w = f.base[1].values;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 5; ++j) {
      float p = 0;
      for (int t = 0; t < 2; ++t) p += b[size_t(i * 2 + t)] * a[size_t(t * 5 + j)];  // exact
      const float sum = w[size_t(i * 5 + j)] + p * 3.0f;                             // exact
      uint16_t h;
      std::memcpy(&h, got.data() + 2 * (i * 5 + j), 2);
      EXPECT_EQ(h, io::f32_to_bf16(sum)) << i << "," << j;
    }
}

TEST(Peft, AdapterConfigIsStrict) {
  EXPECT_THROW(io::parse_adapter_config(R"({"peft_type": "LORA", "r": 8, "r": 16})", "a.json"),
               Error);
  try {
    io::parse_adapter_config(R"({"peft_type": "LORA", "rank_pattern": {"q": 1, "q": 2}})",
                             "a.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Format);
    EXPECT_NE(std::string(e.what()).find("duplicate JSON key 'q'"), std::string::npos) << e.what();
  }
  for (const char* bad :
       {R"({"peft_type": "LORA"} x)", "[]", R"({"r": 8})", R"({"peft_type": "LORA", "r": 0})",
        R"({"peft_type": "LORA", "r": 2.5})", R"({"peft_type": "LORA", "lora_alpha": "8"})",
        R"({"peft_type": "LORA", "rank_pattern": {"q": -1}})",
        R"({"peft_type": "LORA", "rank_pattern": {"q(": 2}})",
        R"({"peft_type": "LORA", "target_modules": [1]})",
        R"({"peft_type": "LORA", "modules_to_save": "lm_head"})"}) {
    EXPECT_THROW(io::parse_adapter_config(bad, "a.json"), Error) << bad;
  }
  struct Case {
    const char* text;
    const char* needle;
  };
  for (const Case& c :
       {Case{R"({"peft_type": "IA3"})", "only LORA"},
        Case{R"({"peft_type": "LORA", "use_dora": true})", "DoRA"},
        Case{R"({"peft_type": "LORA", "lora_bias": true})", "lora_bias"},
        Case{R"({"peft_type": "LORA", "bias": "all"})", "bias \"none\" only"},
        Case{R"({"peft_type": "LORA", "layer_replication": [[0, 2]]})", "layer_replication"},
        Case{R"({"peft_type": "LORA", "target_parameters": ["experts.w"]})",
             "target_parameters"}}) {
    try {
      io::parse_adapter_config(c.text, "a.json");
      FAIL() << c.text;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Unsupported) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("a.json"), std::string::npos) << e.what();
    }
  }
  // Fields that do not change the merged weights are accepted and listed.
  auto ok = io::parse_adapter_config(
      R"({"peft_type": "LORA", "lora_dropout": 0.1, "revision": null, "new_field": 1})", "a.json");
  EXPECT_EQ(ok.ignored.size(), 3u);
}

TEST(Peft, RefusesAdaptersThatDoNotFitTheBase) {
  const std::string cfg =
      config(R"(, "r": 2, "lora_alpha": 2, "target_modules": ["q_proj", "v_proj", "k_proj"])");
  {
    Fixture f;  // module missing from the base
    f.lora("model.layers.0.self_attn.k_proj", 2, 6, 5, 30);
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Format,
                   "base has no tensor 'model.layers.0.self_attn.k_proj.weight'");
  }
  {
    Fixture f;  // factors that do not fit the weight (in = 4, not 5)
    f.lora("model.layers.0.self_attn.q_proj", 2, 6, 4, 31);
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Format, "do not fit the base weight [6, 5]");
  }
  {
    Fixture f;  // rank 3 in the file, 2 in the config
    f.lora("model.layers.0.self_attn.q_proj", 3, 6, 5, 32);
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Format, "rank 3 but the config gives it rank 2");
  }
  {
    Fixture f;  // a module target_modules does not select
    f.lora("model.layers.0.self_attn.q_proj", 2, 6, 5, 33);
    f.write_adapter(config(R"(, "r": 2, "target_modules": ["v_proj"])"));
    expect_refused(f, ErrorKind::Format, "do not select it");
  }
  {
    Fixture f;  // lora_A without lora_B
    f.lora("model.layers.0.self_attn.q_proj", 2, 6, 5, 34);
    f.factors.pop_back();
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Format, "lora_A but no lora_B");
  }
  {
    Fixture f;  // DoRA magnitude vector
    f.lora("model.layers.0.self_attn.q_proj", 2, 6, 5, 35);
    f.factors.push_back({P + "model.layers.0.self_attn.q_proj.lora_magnitude_vector",
                         io::DType::F32,
                         {6},
                         random_values(6, 36)});
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Unsupported, "DoRA");
  }
  {
    Fixture f;  // bias on lora_B
    f.lora("model.layers.0.self_attn.q_proj", 2, 6, 5, 37);
    f.factors.push_back({P + "model.layers.0.self_attn.q_proj.lora_B.bias",
                         io::DType::F32,
                         {6},
                         random_values(6, 38)});
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Unsupported, "lora_bias");
  }
  {
    Fixture f;  // a key without peft's prefix
    f.factors.push_back({"model.layers.0.self_attn.q_proj.lora_A.weight",
                         io::DType::F32,
                         {2, 5},
                         random_values(10, 39)});
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Format, "does not start with 'base_model.model.'");
  }
  {
    Fixture f;  // a whole tensor of a module not in modules_to_save
    f.factors.push_back({P + "model.norm.weight", io::DType::F32, {4}, random_values(4, 40)});
    f.write_adapter(cfg);
    expect_refused(f, ErrorKind::Format, "not in modules_to_save");
  }
  {
    Fixture f;  // a saved module of another shape (resized vocabulary)
    f.factors.push_back({P + "lm_head.weight", io::DType::F32, {12, 4}, random_values(48, 41)});
    f.write_adapter(
        config(R"(, "r": 2, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"])"));
    expect_refused(f, ErrorKind::Unsupported, "different shape");
  }
  {
    Fixture f;  // LoRA on a 1-D tensor
    f.factors.push_back(
        {P + "model.norm.lora_A.weight", io::DType::F32, {2, 4}, random_values(8, 42)});
    f.factors.push_back(
        {P + "model.norm.lora_B.weight", io::DType::F32, {4, 2}, random_values(8, 43)});
    f.base[5].name = "model.norm.weight";
    f.write_adapter(config(R"(, "r": 2, "target_modules": ["norm"])"));
    expect_refused(f, ErrorKind::Unsupported, "only 2-D weights");
  }
  {
    Fixture f;  // adapter_model.bin only
    f.write_base();
    std::ofstream(f.adapter / "adapter_config.json") << cfg;
    std::ofstream(f.adapter / "adapter_model.bin") << "x";
    expect_refused(f, ErrorKind::Format, "adapter_model.bin");
  }
}
