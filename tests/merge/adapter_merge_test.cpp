// mergekit's `base+adapter` model references: a PEFT LoRA adapter over a directory enters the
// merge as W = W_base + (alpha/r)·B·A per adapted tensor (io/peft.h), giving the same bytes as
// merging that model written out in full, and the closed form computed here in f64.
#include <gtest/gtest.h>

#include <cmath>

#include "io/peft.h"
#include "merge_cli_util.h"

using namespace deltaedit;
using namespace deltaedit::testing;
using nlohmann::json;

namespace {

const char* const kModules[] = {"model.layers.0.self_attn.q_proj",
                                "model.layers.1.self_attn.v_proj"};

struct AdapterFixture {
  TempDir t;
  fs::path adapter = t / "adapter", full = t / "full";
  std::vector<SynthTensor> factors;
  int64_t r = 2;
  double scaling = 4.0 / 2;  // lora_alpha / r

  AdapterFixture() {
    auto base = io::Checkpoint::open(fix("base"));
    fs::create_directories(adapter);
    uint32_t seed = 50;
    for (const char* m : kModules) {
      const auto& shape = base.info(std::string(m) + ".weight").shape;
      factors.push_back({std::string("base_model.model.") + m + ".lora_A.weight",
                         io::DType::F32,
                         {r, shape[1]},
                         random_values(size_t(r * shape[1]), seed++, 0.05f)});
      factors.push_back({std::string("base_model.model.") + m + ".lora_B.weight",
                         io::DType::F32,
                         {shape[0], r},
                         random_values(size_t(shape[0] * r), seed++, 0.05f)});
    }
    write_text(
        adapter / "adapter_config.json",
        R"({"peft_type": "LORA", "bias": "none", "use_dora": false, "fan_in_fan_out": false,)"
        R"( "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]})");
    write_safetensors(adapter / "adapter_model.safetensors", factors);
    // The same model written out in full, from the adapter source's formed tensors.
    auto src = io::AdapterSource::open(adapter, base);
    std::vector<SynthTensor> ts;
    for (const auto& n : src->names()) {
      const auto& info = src->info(n);
      std::vector<float> v(info.numel());
      io::to_f32(src->data(n), info.dtype, v);
      ts.push_back({n, info.dtype, info.shape, v});
    }
    fs::create_directories(full);
    write_safetensors(full / "model.safetensors", ts);
    fs::copy_file(fix("base/config.json"), full / "config.json");
  }
  // W_base + scaling·B·A of module m, in f64.
  std::vector<double> formed(const io::Checkpoint& base, size_t m) const {
    const std::string name = std::string(kModules[m]) + ".weight";
    const auto w = read_f32(base, name);
    const auto& shape = base.info(name).shape;
    const auto& a = factors[2 * m].values;
    const auto& b = factors[2 * m + 1].values;
    std::vector<double> out(w.size());
    for (int64_t i = 0; i < shape[0]; ++i)
      for (int64_t j = 0; j < shape[1]; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < r; ++k)
          acc += double(b[size_t(i * r + k)]) * a[size_t(k * shape[1] + j)];
        out[size_t(i * shape[1] + j)] = w[size_t(i * shape[1] + j)] + scaling * acc;
      }
    return out;
  }
};

std::string config(const std::string& first) {
  return "merge_method: task_arithmetic\nbase_model: " + fix("base") +
         "\nmodels:\n  - model: " + first +
         "\n    parameters: {weight: 0.7}\n  - model: " + fix("post") +
         "\n    parameters: {weight: 0.4}\n";
}

}  // namespace

TEST(MergeAdapter, BasePlusAdapterIsTheFormedModel) {
  AdapterFixture f;
  const std::string ref = fix("base") + "+" + f.adapter.string();
  write_text(f.t / "lora.yaml", config(ref));
  write_text(f.t / "full.yaml", config(f.full.string()));
  for (const char* threads : {"1", "2"}) {
    const std::string suffix = threads;
    auto a = run_cli({"merge", (f.t / "lora.yaml").string(), "--out",
                      (f.t / ("lora" + suffix)).string(), "--threads", threads});
    ASSERT_EQ(a.status, 0) << a.err;
  }
  auto b = run_cli({"merge", (f.t / "full.yaml").string(), "--out", (f.t / "full_out").string()});
  ASSERT_EQ(b.status, 0) << b.err;

  auto base = io::Checkpoint::open(fix("base"));
  auto post = io::Checkpoint::open(fix("post"));
  auto lora = io::Checkpoint::open(f.t / "lora1");
  auto lora2 = io::Checkpoint::open(f.t / "lora2");
  auto full = io::Checkpoint::open(f.t / "full_out");
  ASSERT_EQ(lora.names(), full.names());
  for (const auto& n : lora.names()) {
    auto x = lora.data(n), y = full.data(n), z = lora2.data(n);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << n;
    EXPECT_TRUE(std::equal(x.begin(), x.end(), z.begin(), z.end())) << n;
  }
  // Closed form on the adapted tensors: b + 0.7·(W_formed − b) + 0.4·(post − b).
  for (size_t m = 0; m < 2; ++m) {
    const std::string name = std::string(kModules[m]) + ".weight";
    const auto w = f.formed(base, m);
    const auto bv = read_f32(base, name), pv = read_f32(post, name), o = read_f32(lora, name);
    size_t moved = 0;
    for (size_t i = 0; i < o.size(); ++i) {
      const double want = bv[i] + 0.7 * (w[i] - bv[i]) + 0.4 * (double(pv[i]) - bv[i]);
      EXPECT_NEAR(o[i], want, 1e-5 * (1 + std::fabs(want))) << name << " [" << i << "]";
      moved += std::fabs(w[i] - bv[i]) > 1e-6;
    }
    EXPECT_GT(moved, o.size() / 2) << name << ": the adapter changes the tensor";
  }
  // The reference as written is recorded.
  const json prov = json::parse(read_file(f.t / "lora1" / "deltaedit.json"));
  EXPECT_EQ(prov["models"][0]["path"], ref) << prov["models"].dump();
}

TEST(MergeAdapter, MissingAdapterOrBaseDirectoryIsAFileError) {
  AdapterFixture f;
  write_text(f.t / "a.yaml", config(fix("base") + "+" + (f.t / "nowhere").string()));
  auto a = run_cli({"merge", (f.t / "a.yaml").string(), "--out", (f.t / "out").string()});
  EXPECT_EQ(a.status, 1) << a.err;
  EXPECT_NE(a.err.find("adapter directory"), std::string::npos) << a.err;
  EXPECT_NE(a.err.find("line 4"), std::string::npos) << a.err;
  write_text(f.t / "b.yaml", config((f.t / "nobase").string() + "+" + f.adapter.string()));
  auto b = run_cli({"merge", (f.t / "b.yaml").string(), "--out", (f.t / "out").string()});
  EXPECT_EQ(b.status, 1) << b.err;
  EXPECT_NE(b.err.find("does not exist"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("base+adapter"), std::string::npos) << b.err;
  EXPECT_FALSE(fs::exists(f.t / "out"));
}
