// The per-tensor plan (MERGE.md §1.2–§1.4): gradients interpolated at t = k/(L−1) per slice,
// t = 0 for embeddings / final norm / lm_head, first-match substring filters, per-model filters on
// input names and global filters on output names, and the precedence of levels. Expected values
// are computed here from the spec's formulas, tensor by tensor.
#include "merge/plan.h"

#include <gtest/gtest.h>

#include <cmath>

#include "merge/params.h"
#include "merge_cli_util.h"
#include "util/error.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

const char* kSuffixes[] = {".self_attn.q_proj.weight", ".mlp.up_proj.weight",
                           ".input_layernorm.weight"};

// A 5-layer model with small tensors; values differ per model (seed).
void make_model(const fs::path& dir, uint32_t seed, int layers = 5) {
  std::vector<SynthTensor> ts;
  ts.push_back({"model.embed_tokens.weight", io::DType::F32, {16, 4}, random_values(64, seed)});
  ts.push_back({"lm_head.weight", io::DType::F32, {16, 4}, random_values(64, seed + 1)});
  ts.push_back({"model.norm.weight", io::DType::F32, {4}, random_values(4, seed + 2)});
  for (int l = 0; l < layers; ++l)
    for (const char* s : kSuffixes) {
      const bool norm = std::string(s).find("norm") != std::string::npos;
      ts.push_back({"model.layers." + std::to_string(l) + s, io::DType::F32,
                    norm ? std::vector<int64_t>{4} : std::vector<int64_t>{4, 4},
                    random_values(norm ? 4 : 16, seed + 10 + uint32_t(l))});
    }
  write_model(dir, ts, layers);
}

merge::MergePlan plan_of(const std::string& yaml, const merge::PlanOptions& o = {}) {
  return merge::build_plan(merge::parse_merge_config(yaml, "plan.yaml"), o);
}

const merge::PlanTensor& tensor(const merge::MergePlan& p, const std::string& name) {
  for (const auto& t : p.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// MERGE.md §1.2, written out independently.
double interp(const std::vector<double>& g, double t) {
  const double s = t * double(g.size() - 1);
  const size_t i0 = size_t(std::floor(s));
  const size_t i1 = std::min(g.size() - 1, i0 + 1);
  const double f = s - double(i0);
  return (1 - f) * g[i0] + f * g[i1];
}

}  // namespace

TEST(MergeParams, InterpolationAndFilters) {
  EXPECT_EQ(merge::interpolate({0, 1, 3}, 0.0), 0.0);
  EXPECT_EQ(merge::interpolate({0, 1, 3}, 0.25), 0.5);
  EXPECT_EQ(merge::interpolate({0, 1, 3}, 0.75), 2.0);
  EXPECT_EQ(merge::interpolate({0, 1, 3}, 1.0), 3.0);
  EXPECT_EQ(merge::interpolate({0.1, 0.7}, 1.0 / 3.0),
            (1 - 1.0 / 3.0) * 0.1 + (1.0 / 3.0) * 0.7);  // in double
  EXPECT_EQ(merge::interpolate({4}, 0.6), 4.0);
  EXPECT_TRUE(merge::filter_matches(std::nullopt, "x"));
  EXPECT_TRUE(merge::filter_matches("*", "x"));
  EXPECT_TRUE(merge::filter_matches("attn", "model.layers.0.self_attn.q_proj.weight"));
  EXPECT_FALSE(
      merge::filter_matches("Attn", "model.layers.0.self_attn.q_proj.weight"));  // case-sensitive
  EXPECT_FALSE(
      merge::filter_matches("layers.*.mlp", "model.layers.0.mlp.up_proj.weight"));  // no globs
}

TEST(MergePlan, LayerGradientTensorByTensor) {
  TempDir t;
  make_model(t / "base", 1);
  make_model(t / "a", 100);
  make_model(t / "b", 200);
  const std::vector<double> g = {0, 1, 3};
  auto plan = plan_of(
      "merge_method: task_arithmetic\nbase_model: " + (t / "base").string() +
      "\nparameters:\n  lambda: [2, 4]\nmodels:\n"
      "  - model: " +
      (t / "a").string() +
      "\n    parameters:\n      weight: [0, 1, 3]\n"
      "  - model: " +
      (t / "b").string() +
      "\n    parameters:\n      weight:\n"
      "        - {filter: self_attn, value: 0.25}\n"
      "        - {filter: mlp, value: [0.5, 1.5]}\n"
      "        - {filter: attn, value: 9}\n"  // never reached for self_attn: first match wins
      "        - {value: 2}\n");
  ASSERT_EQ(plan.models.size(), 3u);
  EXPECT_EQ(plan.models[0].path, (t / "a").string());  // config order; the unlisted base last
  ASSERT_TRUE(plan.base);
  EXPECT_EQ(*plan.base, 2u);
  EXPECT_EQ(plan.donor, 2u);
  EXPECT_EQ(plan.tensors.size(), 3u + 5u * 3u);
  for (int l = 0; l < 5; ++l)
    for (const char* s : kSuffixes) {
      const std::string name = "model.layers." + std::to_string(l) + s;
      const auto& pt = tensor(plan, name);
      const double tt = l / 4.0;
      EXPECT_DOUBLE_EQ(pt.t, tt) << name;
      EXPECT_TRUE(pt.layer);
      ASSERT_TRUE(pt.base);
      EXPECT_EQ(pt.base->tensor, name);
      ASSERT_EQ(pt.models.size(), 2u);
      EXPECT_EQ(pt.models[0].params.at("weight"), interp(g, tt)) << name;
      const std::string sfx = s;
      const double wb = sfx.find("self_attn") != std::string::npos ? 0.25
                        : sfx.find("mlp") != std::string::npos     ? interp({0.5, 1.5}, tt)
                                                                   : 2.0;
      EXPECT_EQ(pt.models[1].params.at("weight"), wb) << name;
      EXPECT_EQ(pt.models[0].params.at("density"), 1.0);  // default
      EXPECT_EQ(pt.global.at("lambda"), interp({2, 4}, tt)) << name;
      EXPECT_TRUE(pt.notes.empty()) << name;
    }
  // Embeddings, the final norm and lm_head take t = 0: every gradient's first value.
  for (const char* name : {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}) {
    const auto& pt = tensor(plan, name);
    EXPECT_EQ(pt.t, 0.0) << name;
    EXPECT_FALSE(pt.layer);
    EXPECT_EQ(pt.models[0].params.at("weight"), 0.0) << name;
    EXPECT_EQ(pt.models[1].params.at("weight"), 2.0) << name;
    EXPECT_EQ(pt.global.at("lambda"), 2.0) << name;
  }
  bool warned = false;
  for (const auto& w : plan.warnings)
    warned |= w.find("lm_head.weight takes weight 0.0") != std::string::npos &&
              w.find("the first value of the gradient [0, 1, 3]") != std::string::npos;
  EXPECT_TRUE(warned) << nlohmann::json(plan.warnings).dump(1);
  // Paper conventions give post-weights (final norm, lm_head) t = 1 and embeddings t = 0.
  auto paper =
      plan_of("merge_method: task_arithmetic\nbase_model: " + (t / "base").string() +
              "\ndeltaedit: {conventions: paper}\nmodels:\n  - model: " + (t / "a").string() +
              "\n    parameters: {weight: [0, 1, 3]}\n");
  EXPECT_EQ(tensor(paper, "lm_head.weight").models[0].params.at("weight"), 3.0);
  EXPECT_EQ(tensor(paper, "model.norm.weight").models[0].params.at("weight"), 3.0);
  EXPECT_EQ(tensor(paper, "model.embed_tokens.weight").models[0].params.at("weight"), 0.0);
}

TEST(MergePlan, SlicesRestartTheGradientAndRenumberLayers) {
  TempDir t;
  make_model(t / "a", 100);
  make_model(t / "b", 200);
  const std::string A = (t / "a").string(), B = (t / "b").string();
  auto plan = plan_of(
      "merge_method: linear\nparameters:\n  weight: 0.3\n  normalize: [0, 1]\nslices:\n"
      "  - sources:\n"
      "      - {model: " +
      A +
      ", layer_range: [0, 3], parameters: {weight: 0.9}}\n"
      "      - {model: " +
      B +
      ", layer_range: [2, 5]}\n"
      "    parameters: {weight: 0.6}\n"
      "  - sources:\n"
      "      - {model: " +
      A +
      ", layer_range: [3, 5]}\n"
      "      - {model: " +
      B +
      ", layer_range: [0, 2]}\n"
      "  - sources:\n"
      "      - {model: " +
      A +
      ", layer_range: [4, 5]}\n"
      "      - {model: " +
      B + ", layer_range: [4, 5]}\n");
  EXPECT_EQ(plan.output_layers, 6);
  EXPECT_TRUE(plan.layers_renumbered);
  struct Expect {
    int out, in_a, in_b;
    double t, wa, wb;
  };
  const std::vector<Expect> want = {{0, 0, 2, 0.0, 0.9, 0.6}, {1, 1, 3, 0.5, 0.9, 0.6},
                                    {2, 2, 4, 1.0, 0.9, 0.6}, {3, 3, 0, 0.0, 0.3, 0.3},
                                    {4, 4, 1, 1.0, 0.3, 0.3}, {5, 4, 4, 1.0, 0.3, 0.3}};
  for (const auto& e : want) {
    const std::string out = "model.layers." + std::to_string(e.out) + ".mlp.up_proj.weight";
    const auto& pt = tensor(plan, out);
    EXPECT_DOUBLE_EQ(pt.t, e.t) << out;
    ASSERT_EQ(pt.models.size(), 2u);
    EXPECT_EQ(pt.models[0].tensor,
              "model.layers." + std::to_string(e.in_a) + ".mlp.up_proj.weight");
    EXPECT_EQ(pt.models[1].tensor,
              "model.layers." + std::to_string(e.in_b) + ".mlp.up_proj.weight");
    EXPECT_EQ(pt.models[0].params.at("weight"), e.wa) << out;
    EXPECT_EQ(pt.models[1].params.at("weight"), e.wb) << out;
    EXPECT_EQ(pt.global.at("normalize"), e.t) << out;
  }
  EXPECT_FALSE(tensor(plan, "model.layers.5.mlp.up_proj.weight")
                   .notes.empty());  // t = 1 for a one-layer slice
  // Pre-weights use slice 0's parameters, post-weights the last slice's.
  EXPECT_EQ(tensor(plan, "model.embed_tokens.weight").models[1].params.at("weight"), 0.6);
  EXPECT_EQ(tensor(plan, "lm_head.weight").models[1].params.at("weight"), 0.3);
  EXPECT_EQ(plan.tensors.size(), 3u + 6u * 3u);
}

TEST(MergePlan, PerModelFiltersMatchInputNamesGlobalFiltersOutputNames) {
  TempDir t;
  make_model(t / "base", 1);
  make_model(t / "a", 100);
  const std::string base = (t / "base").string(), A = (t / "a").string();
  auto plan = plan_of(
      "merge_method: task_arithmetic\nparameters:\n  lambda:\n    - {filter: layers.0., value: 2}\n"
      "    - {value: 1}\nslices:\n  - base_model: " +
      base +
      "\n    sources:\n"
      "      - {model: " +
      base +
      ", layer_range: [3, 5]}\n"
      "      - model: " +
      A +
      "\n        layer_range: [3, 5]\n        parameters:\n          weight:\n"
      "            - {filter: nothing-matches, value: 7}\n"
      "            - {filter: layers.3., value: 0.5}\n"
      "            - {value: 1}\n");
  const auto& l0 = tensor(plan, "model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(l0.models.at(0).tensor, "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(l0.base->tensor, "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(l0.models[0].params.at("weight"), 0.5);  // input name layers.3.
  EXPECT_EQ(l0.global.at("lambda"), 2.0);            // output name layers.0.
  const auto& l1 = tensor(plan, "model.layers.1.mlp.up_proj.weight");
  EXPECT_EQ(l1.models[0].params.at("weight"), 1.0);
  EXPECT_EQ(l1.global.at("lambda"), 1.0);
}

TEST(MergePlan, ConditionsThatMatchNothingFallThrough) {
  TempDir t;
  make_model(t / "a", 100);
  make_model(t / "b", 200);
  auto plan = plan_of(
      "merge_method: linear\nparameters:\n  weight: 0.25\nmodels:\n"
      "  - model: " +
      (t / "a").string() +
      "\n    parameters:\n      weight: [{filter: mlp, value: 3}]\n"
      "  - model: " +
      (t / "b").string() + "\n    parameters: {weight: 1}\n");
  EXPECT_EQ(tensor(plan, "model.layers.0.mlp.up_proj.weight").models[0].params.at("weight"), 3.0);
  EXPECT_EQ(tensor(plan, "model.layers.0.self_attn.q_proj.weight").models[0].params.at("weight"),
            0.25);
  EXPECT_EQ(tensor(plan, "model.layers.0.self_attn.q_proj.weight").global.at("normalize"),
            1.0);  // default
}

TEST(MergePlan, TiedEmbeddingsAndVocabularyCrops) {
  TempDir t;
  // Base without lm_head (tied); a fine-tune with a grown vocabulary and its own lm_head.
  std::vector<SynthTensor> base = {
      {"model.embed_tokens.weight", io::DType::F32, {16, 4}, random_values(64, 1)},
      {"model.layers.0.mlp.up_proj.weight", io::DType::F32, {4, 4}, random_values(16, 2)}};
  std::vector<SynthTensor> big = {
      {"model.embed_tokens.weight", io::DType::F32, {20, 4}, random_values(80, 3)},
      {"lm_head.weight", io::DType::F32, {20, 4}, random_values(80, 4)},
      {"model.layers.0.mlp.up_proj.weight", io::DType::F32, {4, 4}, random_values(16, 5)}};
  write_model(t / "base", base, 1, ", \"tie_word_embeddings\": true");
  write_model(t / "big", big, 1);
  auto plan =
      plan_of("merge_method: task_arithmetic\nbase_model: " + (t / "base").string() +
              "\nmodels:\n  - model: " + (t / "big").string() + "\n    parameters: {weight: 1}\n");
  const auto& head = tensor(plan, "lm_head.weight");
  EXPECT_EQ(head.base->tensor,
            "model.embed_tokens.weight");  // the tied base contributes its embeddings
  EXPECT_TRUE(head.base->tied);
  EXPECT_EQ(head.shape, (std::vector<int64_t>{16, 4}));  // cropped to the base
  EXPECT_EQ(tensor(plan, "model.embed_tokens.weight").shape, (std::vector<int64_t>{16, 4}));
  // linear crops to the common minimum; with no lm_head anywhere, none is written.
  auto lin = plan_of("merge_method: linear\nmodels:\n  - model: " + (t / "base").string() +
                     "\n    parameters: {weight: 1}\n  - model: " + (t / "base").string() +
                     "/.\n    parameters: {weight: 1}\n");
  for (const auto& pt : lin.tensors) EXPECT_NE(pt.name, "lm_head.weight");
  // A smaller fine-tune than the base cannot be cropped up: an error naming the tensor.
  try {
    plan_of("merge_method: task_arithmetic\nbase_model: " + (t / "big").string() +
            "\nmodels:\n  - model: " + (t / "base").string() + "\n    parameters: {weight: 1}\n");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Usage);
    EXPECT_NE(std::string(e.what()).find("smaller than the base"), std::string::npos) << e.what();
  }
}

TEST(MergePlan, ShapeMismatchSkipsForTaskVectorsAndFailsForLinear) {
  TempDir t;
  make_model(t / "base", 1, 1);
  std::vector<SynthTensor> odd = {
      {"model.embed_tokens.weight", io::DType::F32, {16, 4}, random_values(64, 1)},
      {"lm_head.weight", io::DType::F32, {16, 4}, random_values(64, 2)},
      {"model.norm.weight", io::DType::F32, {4}, random_values(4, 3)}};
  for (const char* s : kSuffixes) {
    const bool up = std::string(s).find("up_proj") != std::string::npos;
    const bool norm = std::string(s).find("norm") != std::string::npos;
    std::vector<int64_t> shape = norm ? std::vector<int64_t>{4}
                                 : up ? std::vector<int64_t>{2, 8}
                                      : std::vector<int64_t>{4, 4};
    odd.push_back({std::string("model.layers.0") + s, io::DType::F32, shape,
                   random_values(norm ? 4 : 16, 9)});
  }
  write_model(t / "odd", odd, 1);
  auto plan =
      plan_of("merge_method: task_arithmetic\nbase_model: " + (t / "base").string() +
              "\nmodels:\n  - model: " + (t / "odd").string() + "\n    parameters: {weight: 1}\n");
  EXPECT_TRUE(tensor(plan, "model.layers.0.mlp.up_proj.weight").models.empty());
  bool warned = false;
  for (const auto& w : plan.warnings)
    warned |= w.find("is skipped for this tensor") != std::string::npos;
  EXPECT_TRUE(warned);
  EXPECT_THROW(plan_of("merge_method: linear\nmodels:\n  - model: " + (t / "base").string() +
                       "\n    parameters: {weight: 1}\n  - model: " + (t / "odd").string() +
                       "\n    parameters: {weight: 1}\n"),
               Error);
}

TEST(MergePlan, DtypesFollowTheConfigAndTheBase) {
  auto plan = plan_of("merge_method: task_arithmetic\nbase_model: " + fix("base") +
                      "\nmodels:\n  - model: " + fix("post_bf16_sharded") +
                      "\n    parameters: {weight: 1}\n");
  for (const auto& pt : plan.tensors) {
    EXPECT_EQ(pt.work, io::DType::F32) << pt.name;  // the base's dtype
    EXPECT_EQ(pt.out_dtype, io::DType::F32);
  }
  auto bf =
      plan_of("merge_method: linear\ndtype: bfloat16\nout_dtype: float16\nmodels:\n  - model: " +
              fix("base") + "\n    parameters: {weight: 1}\n");
  EXPECT_EQ(bf.tensors[0].work, io::DType::BF16);
  EXPECT_EQ(bf.tensors[0].out_dtype, io::DType::F16);
  auto widest =
      plan_of("merge_method: linear\nmodels:\n  - model: " + fix("base") +
              "\n    parameters: {weight: 1}\n" + "  - model: " + fix("post_bf16_sharded") +
              "\n    parameters: {weight: 1}\n");
  EXPECT_EQ(widest.tensors[0].work, io::DType::F32);
}
