// The shipped in-house pair meets its bars; zoo training is deterministic; sweep points resume.
#include <filesystem>
#include <cmath>
#include <fstream>
#include <tuple>

#include <gtest/gtest.h>

#include "experiments/sweep.h"
#include "zoo/train.h"
#include "io/checkpoint.h"
#include "model/evaluate.h"
#include "text/dataset.h"
#include "text/gsm8k.h"
#include "util/error.h"

namespace fs = std::filesystem;
using namespace deltaedit;

namespace {
const fs::path kZoo = fs::path(DELTAEDIT_SOURCE_DIR) / "models/zoo/retrain";

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "deltaedit-exp-XXXXXX").string();
    path = ::mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

// The bars of the shipped pair, measured on 200 held-out problems (disjoint from training).
TEST(ZooModels, ShippedPairMeetsAccuracyBars) {
  auto tok = text::Tokenizer::load(kZoo / "post");
  auto recs = text::load_jsonl(kZoo / "data/tasks_test.jsonl", &tok, {0, 200});
  ASSERT_EQ(recs.size(), 200u);
  auto post = model::Model::load(io::Checkpoint::open(kZoo / "post"));
  auto base = model::Model::load(io::Checkpoint::open(kZoo / "base"));
  const double post_acc = model::dataset_accuracy(post, tok, recs, 48).accuracy();
  const double base_acc = model::dataset_accuracy(base, tok, recs, 48).accuracy();
  EXPECT_GE(post_acc, 0.80);
  EXPECT_LE(base_acc, 0.20);
  RecordProperty("post_accuracy", std::to_string(post_acc));
  RecordProperty("base_accuracy", std::to_string(base_acc));
  // The model cards record what the bars need.
  auto card = nlohmann::json::parse(read(kZoo / "post/zoo.json"));
  EXPECT_GT(card["parameters"].get<int64_t>(), 0);
  EXPECT_GT(card["post_training"]["tokens_seen"].get<int64_t>(), 0);
  EXPECT_GT(card["post_training"]["seconds"].get<double>(), 0);
}

// Batched decoding (equal-length prompts share a KV cache) gives each prompt its own greedy path.
TEST(ZooModels, BatchedAccuracyMatchesOneByOneDecoding) {
  auto tok = text::Tokenizer::load(kZoo / "post");
  auto recs = text::load_jsonl(kZoo / "data/tasks_test.jsonl", &tok, {0, 40});
  auto m = model::Model::load(io::Checkpoint::open(kZoo / "post"));
  auto batched = model::dataset_accuracy(m, tok, recs, 48);
  size_t correct = 0;
  for (size_t i = 0; i < recs.size(); ++i) {
    auto p = tok.encode(recs[i].prompt, true);
    auto g = m.generate(std::vector<int64_t>(p.begin(), p.end()), 48, tok.eos_id());
    std::vector<int32_t> g32(g.begin(), g.end());
    const std::string text = tok.decode(g32, true);
    EXPECT_EQ(text, batched.outputs[i]) << i;
    correct += text::answers_match(text::extract_answer(text), text::extract_answer(recs[i].response));
  }
  EXPECT_EQ(correct, batched.correct);
}

// Same seed and threads: identical checkpoints. A different seed: different weights.
TEST(Zoo, TrainingIsDeterministic) {
  TempDir t;
  zoo::ZooOptions o;
  o.hidden = 32;
  o.intermediate = 64;
  o.layers = 1;
  o.heads = 2;
  o.kv_heads = 1;
  o.vocab = 300;
  o.pretrain_steps = 3;
  o.sft_steps = 3;
  o.pretrain_batch = o.sft_batch = 4;
  o.n_train = 200;
  o.n_test = 20;
  o.n_eval = 4;
  o.corpus_bytes = 20000;
  o.threads = 1;
  zoo::build_zoo(t.path / "a", o);
  zoo::build_zoo(t.path / "b", o);
  o.seed = 2;
  zoo::build_zoo(t.path / "c", o);
  for (const char* f : {"base/model.safetensors", "post/model.safetensors", "post/tokenizer.json",
                        "data/tasks_test.jsonl"})
    EXPECT_EQ(read(t.path / "a" / f), read(t.path / "b" / f)) << f;
  EXPECT_NE(read(t.path / "a/post/model.safetensors"), read(t.path / "c/post/model.safetensors"));
  EXPECT_EQ(io::Checkpoint::open(t.path / "a/post").config()->architecture, "LlamaForCausalLM");
  EXPECT_THROW(zoo::build_zoo(t.path / "a", o), Error);  // never over an existing output
}

// The family at a tiny scale: same seed and threads give identical checkpoints for every stage; a
// rerun into the same folder keeps the finished stages; another recipe there is refused.
TEST(Zoo, FamilyTrainingIsDeterministicAndResumes) {
  TempDir t;
  zoo::FamilyOptions o;
  o.hidden = 32;
  o.intermediate = 64;
  o.layers = 1;
  o.heads = 2;
  o.kv_heads = 1;
  o.vocab = 300;
  o.pretrain_steps = 3;
  o.sft_steps = 2;
  o.dpo_steps = 2;
  o.pretrain_batch = o.sft_batch = o.dpo_batch = 4;
  o.n_train = 200;
  o.n_test = 20;
  o.n_order_train = 200;
  o.n_order_test = 20;
  o.n_dpo_train = 40;
  o.n_dpo_test = 8;
  o.n_eval = 4;
  o.max_new_tokens = 8;
  o.corpus_bytes = 20000;
  auto sa = zoo::build_family(t.path / "a", o);
  zoo::build_family(t.path / "b", o);
  o.seed = 2;
  zoo::build_family(t.path / "c", o);
  o.seed = 1;
  for (const char* stage : {"base", "math-sft", "math-dpo", "order-sft"}) {
    const fs::path f = fs::path(stage) / "model.safetensors";
    EXPECT_EQ(read(t.path / "a" / f), read(t.path / "b" / f)) << stage;
    EXPECT_NE(read(t.path / "a" / f), read(t.path / "c" / f)) << stage;
    EXPECT_TRUE(sa["stages"].contains(stage)) << stage;
  }
  for (const char* f : {"data/dpo_train.jsonl", "data/order_test.jsonl", "data/corpus.txt", "data/tokenizer/tokenizer.json"})
    EXPECT_EQ(read(t.path / "a" / f), read(t.path / "b" / f)) << f;
  // The experts start from base; DPO starts from math-sft and its reference is math-sft, so before
  // training every held-out margin is 0: loss log 2, reward accuracy 0.
  const auto& dpo = sa["stages"]["math-dpo"]["dpo"]["before"];
  EXPECT_NEAR(dpo["dpo_loss"].get<double>(), std::log(2.0), 1e-6);
  EXPECT_EQ(dpo["reward_accuracy"].get<double>(), 0.0);
  EXPECT_GT(sa["stages"]["math-sft"]["delta"]["delta_over_weight"].get<double>(), 0.0);
  // Resume: the finished stages are loaded, not trained again.
  const auto stamp = fs::last_write_time(t.path / "a/math-sft/model.safetensors");
  auto again = zoo::build_family(t.path / "a", o);
  EXPECT_EQ(fs::last_write_time(t.path / "a/math-sft/model.safetensors"), stamp);
  EXPECT_EQ(again["stages"], sa["stages"]);
  o.sft_steps = 3;
  EXPECT_THROW(zoo::build_family(t.path / "a", o), Error);

  // The EXPO setting on the family: a DPO-loss sweep of math-dpo over math-sft. α = −1 gives
  // math-sft itself, the reference, where the DPO loss is log 2 exactly.
  nlohmann::json j{{"base", (t.path / "a/math-sft").string()}, {"post", (t.path / "a/math-dpo").string()},
                   {"eval_data", (t.path / "a/data/eval.jsonl").string()},
                   {"loss_data", (t.path / "a/data/dpo_test.jsonl").string()}, {"loss", "dpo"}, {"beta", 0.1},
                   {"eval_examples", 2}, {"loss_examples", 8}, {"max_new_tokens", 4}, {"steps", 2}, {"threads", 1},
                   {"experiments", {{"F6", {{"alpha", {-1.0, 0.5}}}}}}};
  auto r = experiments::run_sweep(experiments::SweepConfig::from_json(j, {}), t.path / "expo");
  EXPECT_NEAR(r["models"]["base"]["loss"].get<double>(), std::log(2.0), 1e-6);
  for (const auto& p : r["experiments"]["F6"])
    if (p["params"]["alpha"].get<double>() == -1.0) {
      EXPECT_NEAR(p["loss"].get<double>(), std::log(2.0), 1e-5);
    }
  j["loss"] = "kl";
  EXPECT_THROW(experiments::SweepConfig::from_json(j, {}), Error);
}

// The shipped family: its recorded figures meet the targets of its recipe, and re-evaluating a
// sample reproduces them (accuracy within 4 binomial standard errors; Δ ratios exactly).
TEST(ZooModels, ShippedFamilyMeetsItsRecordedFigures) {
  const fs::path fam = fs::path(DELTAEDIT_SOURCE_DIR) / "models/zoo";
  if (!fs::exists(fam / "zoo.json")) GTEST_SKIP() << "models/zoo/zoo.json is not shipped yet";
  auto z = nlohmann::json::parse(read(fam / "zoo.json"));
  if (!z.contains("stages")) GTEST_SKIP() << "models/zoo holds the retrain pair (base, post); the family is not shipped";
  const auto& st = z["stages"];
  EXPECT_LE(st["base"]["evaluation"]["math_accuracy"].get<double>(), 0.20);
  EXPECT_LE(st["base"]["evaluation"]["order_accuracy"].get<double>(), 0.20);
  // The recipe's targets: each expert is a light post-training (‖Δ‖/‖W_base‖ ≤ 0.1, the retrain
  // pair has 0.66) that reaches ≥ 90 % held-out accuracy on its task, where the base is ≤ 20 %;
  // DPO moves math-sft less still.
  for (const char* e : {"math-sft", "order-sft"})
    EXPECT_LE(st[e]["delta"]["delta_over_weight"].get<double>(), 0.1) << e;
  EXPECT_LE(st["math-dpo"]["delta_from_base"]["delta_over_weight"].get<double>(), 0.1);
  EXPECT_LT(st["math-dpo"]["delta"]["delta_over_weight"].get<double>(),
            st["math-sft"]["delta"]["delta_over_weight"].get<double>());
  EXPECT_GE(st["math-sft"]["evaluation"]["math_accuracy"].get<double>(), 0.9);
  EXPECT_GE(st["order-sft"]["evaluation"]["order_accuracy"].get<double>(), 0.9);
  // Post-training is a small fraction of pre-training (tokens fed to the model).
  for (const char* e : {"math-sft", "order-sft", "math-dpo"})
    EXPECT_LT(z["post_to_pre_tokens"][e].get<double>(), 0.1) << e;
  auto tok = text::Tokenizer::load(fam / "base");
  auto base = model::Model::load(io::Checkpoint::open(fam / "base"));
  const size_t n = 50;
  for (const auto& [stage, file, key] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"math-sft", "data/eval.jsonl", "math_accuracy"}, {"order-sft", "data/order_eval.jsonl", "order_accuracy"},
           {"math-dpo", "data/eval.jsonl", "math_accuracy"}}) {
    auto m = model::Model::load(io::Checkpoint::open(fam / stage));
    auto recs = text::load_jsonl(fam / file, &tok, {0, n});
    const double a = st[stage]["evaluation"][key].get<double>();
    const double got = model::dataset_accuracy(m, tok, recs, 48).accuracy();
    const double se = std::sqrt(std::max(a * (1 - a), 0.01) / double(n));
    EXPECT_NEAR(got, a, 4 * se) << stage;
    RecordProperty(stage + "_sample_accuracy", std::to_string(got));
  }
  // ‖Δ‖/‖W_base‖ recomputed from the checkpoints in f64.
  auto sft = model::Model::load(io::Checkpoint::open(fam / "math-sft"));
  double dd = 0, ww = 0;
  for (const auto& name : sft.param_names()) {
    auto w = base.param(name).to(torch::kFloat64), d = sft.param(name).to(torch::kFloat64) - w;
    dd += d.pow(2).sum().item<double>();
    ww += w.pow(2).sum().item<double>();
  }
  EXPECT_NEAR(std::sqrt(dd / ww), st["math-sft"]["delta"]["delta_over_weight"].get<double>(), 1e-9);
}

TEST(Sweep, PointsAndConfigValidation) {
  auto pts = experiments::expand_points(experiments::full_grid_json());
  std::map<std::string, size_t> n;
  for (const auto& p : pts) ++n[p.experiment];
  EXPECT_EQ(n["F1"], 45u);
  EXPECT_EQ(n["T1"], 18u);
  EXPECT_EQ(n["F3"], 17u);
  EXPECT_EQ(n["F4"], 6u);
  EXPECT_EQ(n["F5"], 8u);
  EXPECT_EQ(n["F6"], 21u);
  std::set<std::string> ids;
  for (const auto& p : pts) EXPECT_TRUE(ids.insert(p.id).second) << p.id;
  nlohmann::json bad = experiments::demo_config_json(kZoo);
  bad["experiments"]["F9"] = nlohmann::json::object();
  EXPECT_THROW(experiments::SweepConfig::from_json(bad, {}), Error);
  nlohmann::json bad2 = experiments::demo_config_json(kZoo);
  bad2["experiments"]["F1"]["p"] = {1.0};  // dare p=1 divides by zero: refused before any work
  EXPECT_THROW(experiments::expand_points(bad2["experiments"]), Error);
}

// A small sweep writes every artefact; a second run reuses the finished points.
TEST(Sweep, RunsAndResumes) {
  TempDir t;
  auto j = experiments::demo_config_json(kZoo);
  j["eval_examples"] = 8;
  j["loss_examples"] = 8;
  j["steps"] = 2;
  j["experiments"] = {{"F4", {{"bits", {0, 4}}}}, {"F6", {{"alpha", {-1.0, 0.5}}}}, {"T1", {{"k", {0.9}}}}};
  auto cfg = experiments::SweepConfig::from_json(j, {});
  auto r1 = experiments::run_sweep(cfg, t.path / "s");
  ASSERT_EQ(r1["experiments"]["F4"].size(), 2u);
  ASSERT_EQ(r1["experiments"]["T1"].size(), 3u);
  for (const char* f : {"results.json", "report/index.html", "F4.csv", "F6.csv", "T1.csv"})
    EXPECT_TRUE(fs::exists(t.path / "s" / f)) << f;
  // α = −1 gives the base: its ΔL is L(base) − L(post).
  for (const auto& p : r1["experiments"]["F6"])
    if (p["params"]["alpha"].get<double>() == -1.0) {
      EXPECT_NEAR(p["loss"].get<double>(), r1["models"]["base"]["loss"].get<double>(), 1e-4);
    }
  const auto stamp = fs::last_write_time(t.path / "s/points/F4_bits=4.json");
  auto r2 = experiments::run_sweep(cfg, t.path / "s");
  EXPECT_EQ(fs::last_write_time(t.path / "s/points/F4_bits=4.json"), stamp);
  EXPECT_EQ(r2["experiments"], r1["experiments"]);
  // A different sweep into the same folder is refused.
  j["seed"] = 99;
  EXPECT_THROW(experiments::run_sweep(experiments::SweepConfig::from_json(j, {}), t.path / "s"), Error);
}
