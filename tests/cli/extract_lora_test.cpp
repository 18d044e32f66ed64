// extract-lora end to end on the llama fixture pair: ranks, error figures against an SVD computed
// here with Eigen (f64), the factor convention, vLLM rules, --json, and the adapter read back as
// --post giving W_base + B·A; `edit --op lowrank` of the same ranks gives the same weights.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <iostream>
#include <set>

#include "../engine/engine_test_util.h"
#include "io/checkpoint.h"
#include "io/convert.h"
#include "io/peft.h"
#include "util/error.h"

using namespace deltaedit;
using namespace deltaedit::testing;
using nlohmann::json;

namespace {

const fs::path kBase = fixture("llama/base");
const fs::path kPost = fixture("llama/post");

Eigen::MatrixXd load(const io::TensorSource& src, const std::string& name) {
  const auto& ti = src.info(name);
  std::vector<float> v(ti.numel());
  io::to_f32(src.data(name), ti.dtype, v);
  Eigen::MatrixXd m(ti.shape[0], ti.shape[1]);
  for (int64_t i = 0; i < ti.shape[0]; ++i)
    for (int64_t j = 0; j < ti.shape[1]; ++j) m(i, j) = v[size_t(i * ti.shape[1] + j)];
  return m;
}

// Δ as the engine forms it: f32(post) − f32(base), rounded to f32.
Eigen::MatrixXd delta(const io::Checkpoint& b, const io::Checkpoint& p, const std::string& name) {
  Eigen::MatrixXd d = load(p, name) - load(b, name);
  return d.cast<float>().cast<double>();
}

Eigen::MatrixXd factor(const io::SafetensorsFile& f, const std::string& key) {
  const auto* ti = f.header().find(key);
  EXPECT_NE(ti, nullptr) << key;
  if (!ti) return {};
  EXPECT_EQ(ti->dtype, io::DType::F32) << key;
  std::vector<float> v(ti->numel());
  io::to_f32(f.data(*ti), ti->dtype, v);
  Eigen::MatrixXd m(ti->shape[0], ti->shape[1]);
  for (int64_t i = 0; i < ti->shape[0]; ++i)
    for (int64_t j = 0; j < ti->shape[1]; ++j) m(i, j) = v[size_t(i * ti->shape[1] + j)];
  return m;
}

json run_json(const std::vector<std::string>& args) {
  auto r = run_cli(args);
  EXPECT_EQ(r.status, 0) << r.err;
  if (r.status != 0) return json::object();
  return json::parse(r.out);
}

const std::vector<std::string> kLinear = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

}  // namespace

TEST(ExtractLora, RankErrorsAndFactorsAgainstAnIndependentSvd) {
  TempDir t;
  const fs::path out = t / "lora";
  json j = run_json({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                     "4", "--out", out.string(), "--json"});
  ASSERT_TRUE(j.contains("modules"));
  auto base = io::Checkpoint::open(kBase);
  auto post = io::Checkpoint::open(kPost);
  auto file = io::SafetensorsFile::open(out / "adapter_model.safetensors");
  ASSERT_EQ(j["modules"].size(), 14u);
  double dd = 0, ee = 0;
  uint64_t bytes = 0;
  for (const auto& m : j["modules"]) {
    const std::string module = m["module"], tensor = m["tensor"];
    EXPECT_EQ(tensor, module + ".weight");
    EXPECT_EQ(m["rank"], 4);
    const Eigen::MatrixXd d = delta(base, post, tensor);
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(d);
    const auto& s = svd.singularValues();
    double tail = 0;
    for (Eigen::Index k = 4; k < s.size(); ++k) tail += s(k) * s(k);
    const double optimal = std::sqrt(tail) / d.norm();
    const double rel = m["rel_error"];
    // Never better than the optimum; the exact SVD reaches it, the randomized one comes close.
    EXPECT_GE(rel, optimal * (1 - 1e-5)) << module;
    if (m["method"] == "exact")
      EXPECT_LE(rel, optimal * (1 + 1e-5)) << module;
    else
      EXPECT_LE(rel, optimal * 1.05) << module << " (randomized)";
    EXPECT_EQ(m["method"], std::min(d.rows(), d.cols()) >= 56 ? "randomized" : "exact") << module;
    EXPECT_NEAR(m["delta_norm"].get<double>(), d.norm(), 1e-9 * d.norm()) << module;
    // The written factors: A = √S·Vᵀ (4×in), B = U·√S (out×4); their product is the truncation.
    const Eigen::MatrixXd a = factor(file, "base_model.model." + module + ".lora_A.weight");
    const Eigen::MatrixXd b = factor(file, "base_model.model." + module + ".lora_B.weight");
    ASSERT_EQ(a.rows(), 4);
    ASSERT_EQ(a.cols(), d.cols());
    ASSERT_EQ(b.rows(), d.rows());
    ASSERT_EQ(b.cols(), 4);
    const double err = (d - b * a).norm();
    EXPECT_NEAR(err, m["error_norm"].get<double>(), 1e-4 * d.norm()) << module;
    // A·Aᵀ = S = BᵀB (diagonal), S the top singular values.
    const Eigen::MatrixXd aat = a * a.transpose(), btb = b.transpose() * b;
    for (int p = 0; p < 4; ++p)
      for (int q = 0; q < 4; ++q) {
        const double want = p == q ? s(p) : 0.0;
        const double tol = (m["method"] == "exact" ? 1e-4 : 2e-2) * s(0);
        EXPECT_NEAR(aat(p, q), want, tol) << module << " AAᵀ(" << p << "," << q << ")";
        EXPECT_NEAR(btb(p, q), want, tol) << module << " BᵀB(" << p << "," << q << ")";
      }
    EXPECT_EQ(m["bytes"], 4 * (4 * d.cols() + d.rows() * 4));
    bytes += m["bytes"].get<uint64_t>();
    dd += d.squaredNorm();
    ee += err * err;
  }
  EXPECT_NEAR(j["total"]["rel_error"].get<double>(), std::sqrt(ee / dd), 1e-4);
  EXPECT_EQ(j["total"]["factor_bytes"], bytes);
  EXPECT_EQ(j["total"]["adapter_bytes"], fs::file_size(out / "adapter_model.safetensors") +
                                             fs::file_size(out / "adapter_config.json"));
  // Left out: the embedding, the head and the norms (their Δ is not zero in the fixture).
  std::set<std::string> left;
  for (const auto& l : j["left_out"]) {
    left.insert(l["tensor"].get<std::string>());
    EXPECT_GT(l["delta_norm"].get<double>(), 0.0);
  }
  for (const char* n : {"model.embed_tokens.weight", "lm_head.weight"})
    EXPECT_TRUE(left.count(n)) << n;
  for (const auto& l : left) EXPECT_EQ(file.header().find("base_model.model." + l), nullptr) << l;
  // adapter_config.json
  auto cfg = io::parse_json_strict(read_file(out / "adapter_config.json"), "adapter_config.json");
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_EQ(cfg["lora_alpha"], 4);
  EXPECT_TRUE(cfg["rank_pattern"].empty());
  EXPECT_TRUE(cfg["modules_to_save"].is_null());
  EXPECT_EQ(cfg["target_modules"],
            json({"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}));
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
}

// Runs extract-lora --rank 4 and the equivalent edit --op lowrank (randomized first: it is op 0,
// as in extract-lora, so the keyed random stream is the same) on (base, post); returns the
// adapter directory and the edited checkpoint.
std::pair<fs::path, fs::path> extract_and_edit(const TempDir& t, const fs::path& base,
                                               const fs::path& post) {
  const fs::path out = t / "lora", edited = t / "edited";
  auto x = run_cli({"extract-lora", "--base", base.string(), "--post", post.string(), "--rank", "4",
                    "--out", out.string()});
  EXPECT_EQ(x.status, 0) << x.err;
  auto e =
      run_cli({"edit", "--base", base.string(), "--post", post.string(), "--op",
               "lowrank:rank=4,method=randomized,oversample=10,power_iters=4,include=(q|o|gate|up|"
               "down)_proj",
               "--op", "lowrank:rank=4,method=exact,include=(k|v)_proj", "--out", edited.string()});
  EXPECT_EQ(e.status, 0) << e.err;
  return {out, edited};
}

TEST(ExtractLora, AdapterReadBackAsPostIsBasePlusBA_AndMatchesEditLowrank) {
  TempDir t;
  const auto [out, edited] = extract_and_edit(t, kBase, kPost);
  auto base = io::Checkpoint::open(kBase);
  auto file = io::SafetensorsFile::open(out / "adapter_model.safetensors");
  auto src = io::open_post(out, base);
  auto ed = io::Checkpoint::open(edited);
  for (int layer = 0; layer < 2; ++layer)
    for (const auto& leaf : kLinear) {
      const std::string module = "model.layers." + std::to_string(layer) + "." + leaf;
      const Eigen::MatrixXd a = factor(file, "base_model.model." + module + ".lora_A.weight");
      const Eigen::MatrixXd b = factor(file, "base_model.model." + module + ".lora_B.weight");
      const Eigen::MatrixXd w = load(base, module + ".weight");
      const Eigen::MatrixXd want = w + b * a;
      const Eigen::MatrixXd mag = b.cwiseAbs() * a.cwiseAbs();  // Σ_t |B_it·A_tj|
      const Eigen::MatrixXd got = load(*src, module + ".weight");
      const Eigen::MatrixXd lowrank = load(ed, module + ".weight");
      for (Eigen::Index i = 0; i < want.rows(); ++i)
        for (Eigen::Index k = 0; k < want.cols(); ++k) {
          // W + B·A in f32: a dot product of 4 terms, the scaling, the sum with W (error analysis
          // of f32 arithmetic: (r + 2)·ε·Σ|terms| + ε·|W_post|, ε = 2^-24).
          const double eps = std::ldexp(1.0, -24);
          EXPECT_NEAR(got(i, k), want(i, k),
                      6 * eps * mag(i, k) + eps * std::fabs(want(i, k)) + 1e-30)
              << module;
          // edit --op lowrank forms U·S·Vᵀ from the same U, S, V (B = U·√S and A = √S·Vᵀ add one
          // rounding each, and the two sums run in different orders): within (2r + 6)·ε·Σ|terms|
          // plus the final roundings.
          EXPECT_NEAR(got(i, k), lowrank(i, k),
                      14 * eps * mag(i, k) +
                          2 * eps * std::max(std::fabs(got(i, k)), std::fabs(lowrank(i, k))))
              << module << " (" << i << "," << k << ")";
        }
    }
  // Tensors the adapter does not touch read as the base.
  EXPECT_EQ(src->data("model.norm.weight").data(), base.data("model.norm.weight").data());
}

// The interop claim in a BF16 model: merged adapter and edit --op lowrank within one BF16 ulp,
// except where W_base and B·A cancel (bounded there by the f32 error analysis).
TEST(ExtractLora, Bf16MergedAdapterMatchesEditLowrankWithinOneUlpOutsideCancellation) {
  TempDir t;
  // A BF16 base: the F32 base through edit with Δ' = Δ = 0 and --dtype BF16.
  const fs::path base16 = t / "base16";
  auto c = run_cli({"edit", "--base", kBase.string(), "--post", kBase.string(), "--op",
                    "scale:alpha=0", "--dtype", "BF16", "--out", base16.string()});
  ASSERT_EQ(c.status, 0) << c.err;
  const fs::path post16 = fixture("llama/post_bf16_sharded");
  const auto [out, edited] = extract_and_edit(t, base16, post16);
  auto base = io::Checkpoint::open(base16);
  auto src = io::open_post(out, base);
  auto ed = io::Checkpoint::open(edited);
  auto file = io::SafetensorsFile::open(out / "adapter_model.safetensors");
  uint64_t n = 0, off_by_one = 0, cancelled = 0;
  for (int layer = 0; layer < 2; ++layer)
    for (const auto& leaf : kLinear) {
      const std::string module = "model.layers." + std::to_string(layer) + "." + leaf,
                        name = module + ".weight";
      ASSERT_EQ(src->info(name).dtype, io::DType::BF16);
      ASSERT_EQ(ed.info(name).dtype, io::DType::BF16);
      const Eigen::MatrixXd fa = factor(file, "base_model.model." + module + ".lora_A.weight");
      const Eigen::MatrixXd fb = factor(file, "base_model.model." + module + ".lora_B.weight");
      const Eigen::MatrixXd mag = fb.cwiseAbs() * fa.cwiseAbs();
      const Eigen::MatrixXd w = load(base, name), x = load(*src, name), y = load(ed, name);
      const auto a = src->data(name), b = ed.data(name);
      ASSERT_EQ(a.size(), b.size());
      for (Eigen::Index i = 0; i < x.rows(); ++i)
        for (Eigen::Index k = 0; k < x.cols(); ++k) {
          const size_t at = size_t(i * x.cols() + k);
          uint16_t hx, hy;
          std::memcpy(&hx, a.data() + 2 * at, 2);
          std::memcpy(&hy, b.data() + 2 * at, 2);
          const auto key = [](uint16_t h) {
            return (h & 0x8000) ? -int32_t(h & 0x7FFF) : int32_t(h);
          };
          const int32_t d = std::abs(key(hx) - key(hy));
          ++n;
          off_by_one += d == 1;
          if (d <= 1) continue;
          // Where W_base and B·A cancel, the f32 sums (in different orders) differ by up to
          // 14·ε·(Σ|B_it·A_tj| + |W_base|), which can exceed a BF16 ulp of the tiny result.
          ++cancelled;
          const double eps = std::ldexp(1.0, -24);
          const double ulp16 = std::ldexp(std::max(std::fabs(x(i, k)), std::fabs(y(i, k))), -7);
          EXPECT_LE(std::fabs(x(i, k) - y(i, k)),
                    14 * eps * (mag(i, k) + std::fabs(w(i, k))) + ulp16)
              << name << " [" << at << "]";
          EXPECT_LT(std::fabs(x(i, k)), 1e-3 * std::fabs(w(i, k)))
              << name << " [" << at << "]: not a cancellation";
        }
    }
  EXPECT_LT(off_by_one, n / 100) << "differences by one ulp should be rare";
  EXPECT_LT(cancelled, n / 10000);
  std::cout << "bf16: " << off_by_one << " of " << n << " elements differ by one ulp, " << cancelled
            << " by more (cancellation of W_base and B·A)\n";
}

TEST(ExtractLora, FullRankIsExactAndBitIdenticalToEditLowrank) {
  TempDir t;
  const fs::path out = t / "lora";
  json j = run_json({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                     "64", "--include", "layers\\.0\\.", "--out", out.string(), "--json"});
  ASSERT_EQ(j["modules"].size(), 7u);
  for (const auto& m : j["modules"]) {
    EXPECT_EQ(m["method"], "full");
    EXPECT_EQ(m["rank"], std::min(m["shape"][0].get<int64_t>(), m["shape"][1].get<int64_t>()));
    EXPECT_EQ(m["error_norm"], 0.0);
  }
  auto cfg = io::parse_json_strict(read_file(out / "adapter_config.json"), "c");
  EXPECT_EQ(cfg["r"], 64);  // q, o, up, gate, down: 64; k, v: 32 through the patterns
  EXPECT_EQ(cfg["rank_pattern"]["^model\\.layers\\.0\\.self_attn\\.k_proj"], 32);
  EXPECT_EQ(cfg["alpha_pattern"]["^model\\.layers\\.0\\.self_attn\\.k_proj"], 32);
  const fs::path edited = t / "edited";
  ASSERT_EQ(run_cli({"edit", "--base", kBase.string(), "--post", kPost.string(), "--op",
                     "lowrank:rank=64", "--include", "layers\\.0\\.", "--out", edited.string()})
                .status,
            0);
  auto base = io::Checkpoint::open(kBase);
  auto ed = io::Checkpoint::open(edited);
  auto src = io::open_post(out, base);
  for (const auto& leaf : kLinear) {
    const std::string n = "model.layers.0." + leaf + ".weight";
    const auto a = src->data(n), b = ed.data(n);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << n;
  }
}

TEST(ExtractLora, EnergyPicksTheSmallestRankPerModule) {
  TempDir t;
  const fs::path out = t / "lora";
  json j = run_json({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--energy",
                     "0.8", "--out", out.string(), "--json"});
  auto base = io::Checkpoint::open(kBase);
  auto post = io::Checkpoint::open(kPost);
  auto cfg = io::parse_json_strict(read_file(out / "adapter_config.json"), "c");
  auto src = io::AdapterSource::open(out, base);
  for (const auto& m : j["modules"]) {
    const Eigen::MatrixXd d = delta(base, post, m["tensor"]);
    const auto s = Eigen::JacobiSVD<Eigen::MatrixXd>(d).singularValues();
    const double total = s.squaredNorm();
    int64_t r = 0;
    double acc = 0;
    while (r < s.size() && acc < 0.8 * total) {
      acc += s(r) * s(r);
      ++r;
    }
    EXPECT_EQ(m["rank"], r) << m["module"];
    EXPECT_EQ(src->config_file().rank_for(m["module"]), r) << m["module"];
    EXPECT_DOUBLE_EQ(src->config_file().scaling_for(m["module"]), 1.0) << m["module"];
    EXPECT_LE(m["rel_error"].get<double>(), std::sqrt(0.2) + 1e-6);
  }
}

TEST(ExtractLora, VllmRulesAndSaveModules) {
  TempDir t;
  {
    const fs::path out = t / "vllm";
    json j = run_json({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                       "5", "--vllm", "--out", out.string(), "--json"});
    for (const auto& m : j["modules"]) EXPECT_EQ(m["rank"], 8);
    auto cfg = io::parse_json_strict(read_file(out / "adapter_config.json"), "c");
    EXPECT_EQ(cfg["r"], 8);
    EXPECT_TRUE(cfg["modules_to_save"].is_null());
    auto file = io::SafetensorsFile::open(out / "adapter_model.safetensors");
    for (const auto& ti : file.header().tensors) {
      EXPECT_EQ(ti.name.find(".bias"), std::string::npos) << ti.name;
      EXPECT_NE(ti.name.find(".lora_"), std::string::npos) << ti.name;
    }
  }
  {
    const fs::path out = t / "vllm-energy";
    json j = run_json({"extract-lora", "--base", kBase.string(), "--post", kPost.string(),
                       "--energy", "0.5", "--vllm", "--out", out.string(), "--json"});
    const std::set<int64_t> allowed{1, 8, 16, 32, 64, 128, 256, 320, 512};
    for (const auto& m : j["modules"])
      EXPECT_TRUE(allowed.count(m["rank"].get<int64_t>())) << m["rank"];
  }
  EXPECT_EQ(run_cli({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                     "4", "--vllm", "--save-modules", "lm_head", "--out", (t / "x").string()})
                .status,
            2);
  EXPECT_EQ(run_cli({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                     "600", "--vllm", "--out", (t / "y").string()})
                .status,
            2);
  EXPECT_EQ(run_cli({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--out",
                     (t / "z").string()})
                .status,
            2);
  EXPECT_FALSE(fs::exists(t / "x") || fs::exists(t / "y") || fs::exists(t / "z"));
  {
    const fs::path out = t / "save";
    json j = run_json({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                       "2", "--save-modules", "lm_head,norm", "--out", out.string(), "--json"});
    std::set<std::string> saved;
    for (const auto& s : j["saved"]) saved.insert(s["tensor"]);
    EXPECT_TRUE(saved.count("lm_head.weight"));
    EXPECT_TRUE(saved.count("model.norm.weight"));
    EXPECT_TRUE(
        saved.count("model.layers.0.input_layernorm.weight"));  // peft: names ending with "norm"
    auto cfg = io::parse_json_strict(read_file(out / "adapter_config.json"), "c");
    EXPECT_EQ(cfg["modules_to_save"], json({"lm_head", "norm"}));
    auto base = io::Checkpoint::open(kBase);
    auto post = io::Checkpoint::open(kPost);
    auto src = io::open_post(out, base);
    for (const auto& n : saved) {
      const auto a = src->data(n), b = post.data(n);
      ASSERT_EQ(a.size(), b.size());
      EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size()), 0) << n;
    }
  }
}

TEST(ExtractLora, AdapterAsPostWorksForStatsAndEdit) {
  TempDir t;
  const fs::path out = t / "lora";
  ASSERT_EQ(run_cli({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                     "3", "--out", out.string()})
                .status,
            0);
  auto base = io::Checkpoint::open(kBase);
  auto src = io::open_post(out, base);
  json st = run_json({"stats", "--base", kBase.string(), "--post", out.string(), "--json"});
  double ss = 0;
  for (const auto& n : base.names()) {
    const auto& ti = base.info(n);
    std::vector<float> b(ti.numel()), p(ti.numel());
    io::to_f32(base.data(n), ti.dtype, b);
    io::to_f32(src->data(n), src->info(n).dtype, p);
    for (size_t i = 0; i < b.size(); ++i) ss += double(p[i] - b[i]) * double(p[i] - b[i]);
  }
  EXPECT_NEAR(st["total"]["norm"].get<double>(), std::sqrt(ss), 1e-6 * std::sqrt(ss));
  // edit with Δ' = Δ writes base + (W_post − base) in f32: W_post up to the two roundings, i.e.
  // within 2^-23·max(|W_base|, |W_post|) of it (exactly W_post where Sterbenz's lemma applies).
  const fs::path ed = t / "ed";
  auto e = run_cli({"edit", "--base", kBase.string(), "--post", out.string(), "--op",
                    "scale:alpha=0", "--out", ed.string()});
  ASSERT_EQ(e.status, 0) << e.err;
  auto edck = io::Checkpoint::open(ed);
  EXPECT_EQ(edck.names().size(), base.names().size());
  for (const auto& n : base.names()) {
    const auto& ti = base.info(n);
    std::vector<float> b(ti.numel()), p(ti.numel()), o(ti.numel());
    io::to_f32(base.data(n), ti.dtype, b);
    io::to_f32(src->data(n), src->info(n).dtype, p);
    io::to_f32(edck.data(n), edck.info(n).dtype, o);
    for (size_t i = 0; i < b.size(); ++i)
      EXPECT_LE(std::fabs(double(o[i]) - p[i]),
                std::ldexp(std::max(std::fabs(b[i]), std::fabs(p[i])), -23))
          << n << " " << i;
  }
  EXPECT_TRUE(fs::exists(ed / "config.json"));
}

TEST(ExtractLora, NamedEmbeddingIsExtractedAsEmbeddingLora) {
  TempDir t;
  const fs::path out = t / "lora";
  json j = run_json({"extract-lora", "--base", kBase.string(), "--post", kPost.string(), "--rank",
                     "4", "--include", "embed_tokens|layers\\.0\\.self_attn\\.q_proj", "--out",
                     out.string(), "--json"});
  ASSERT_EQ(j["modules"].size(), 2u);
  auto base = io::Checkpoint::open(kBase);
  auto post = io::Checkpoint::open(kPost);
  auto file = io::SafetensorsFile::open(out / "adapter_model.safetensors");
  // peft's convention: lora_embedding_A is r×vocab, lora_embedding_B is dim×r, Δ ≈ (B·A)ᵀ.
  const Eigen::MatrixXd a = factor(file, "base_model.model.model.embed_tokens.lora_embedding_A");
  const Eigen::MatrixXd b = factor(file, "base_model.model.model.embed_tokens.lora_embedding_B");
  ASSERT_EQ(a.rows(), 4);
  ASSERT_EQ(a.cols(), 1000);
  ASSERT_EQ(b.rows(), 64);
  ASSERT_EQ(b.cols(), 4);
  const Eigen::MatrixXd d = delta(base, post, "model.embed_tokens.weight");
  const auto s = Eigen::JacobiSVD<Eigen::MatrixXd>(d).singularValues();
  double tail = 0;
  for (Eigen::Index k = 4; k < s.size(); ++k) tail += s(k) * s(k);
  const double err = (d - (b * a).transpose()).norm();
  // min(1000, 64) = 64 ≥ (4 + 10)·4: the randomized SVD, near the optimum.
  const double optimal = std::sqrt(tail) / d.norm();
  EXPECT_GE(err / d.norm(), optimal * (1 - 1e-5));
  EXPECT_LE(err / d.norm(), optimal * 1.05);
  for (const auto& m : j["modules"])
    if (m["module"] == "model.embed_tokens") {
      EXPECT_EQ(m["kind"], "embedding");
      EXPECT_EQ(m["method"], "randomized");
      EXPECT_NEAR(m["error_norm"].get<double>(), err, 1e-4 * d.norm());
    }
  auto cfg = io::parse_json_strict(read_file(out / "adapter_config.json"), "c");
  EXPECT_EQ(cfg["target_modules"], json({"embed_tokens", "q_proj"}));
  auto src = io::open_post(out, base);
  const Eigen::MatrixXd want = load(base, "model.embed_tokens.weight") + (b * a).transpose();
  const Eigen::MatrixXd got = load(*src, "model.embed_tokens.weight");
  EXPECT_LT((got - want).cwiseAbs().maxCoeff(), 1e-6);
}
