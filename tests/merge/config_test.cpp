// The merge config is checked strictly, before any tensor is read: every validation error through
// the CLI with its message, YAML line and exit code (2 for the config, 1 for files), and nothing
// created under --out (MERGE.md §0, §1.1).
#include "merge/config.h"

#include <gtest/gtest.h>

#include <random>

#include "merge/params.h"
#include "merge_cli_util.h"
#include "util/error.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

std::string subst(std::string y) {
  for (const auto& [k, v] : std::vector<std::pair<std::string, std::string>>{
           {"@BASE", fix("base")}, {"@POST", fix("post")}, {"@BF16", fix("post_bf16_sharded")}}) {
    for (size_t p; (p = y.find(k)) != std::string::npos;) y.replace(p, k.size(), v);
  }
  return y;
}

struct Case {
  const char* name;
  const char* yaml;
  int status;
  std::vector<std::string> needles;
  std::vector<std::string> extra_args = {};
};

RunResult merge_cli(const TempDir& t, const std::string& yaml,
                    const std::vector<std::string>& extra = {}) {
  const fs::path cfg = write_text(t / "merge.yaml", subst(yaml));
  std::vector<std::string> args = {"merge", cfg.string(), "--out", (t / "out").string()};
  args.insert(args.end(), extra.begin(), extra.end());
  return run_cli(args);
}

}  // namespace

TEST(MergeConfig, EveryValidationErrorThroughTheCli) {
  const std::vector<Case> cases = {
      {"unknown top key",
       "merge_methd: linear\nmodels:\n  - model: @POST\n",
       2,
       {"line 1", "unknown key 'merge_methd'", "did you mean merge_method?"}},
      {"unknown method",
       "merge_method: task-arithmetic\nbase_model: @BASE\nmodels:\n  - model: @POST\n",
       2,
       {"line 1", "unknown merge_method 'task-arithmetic'", "did you mean task_arithmetic?"}},
      {"parameter typo",
       "merge_method: task_arithmetic\nbase_model: @BASE\nmodels:\n  - model: @POST\n    "
       "parameters:\n      weight: 1\n"
       "      desnity: 0.5\n",
       2,
       {"line 7", "unknown parameter 'desnity'", "did you mean density?"}},
      {"parameter the method does not use",
       "merge_method: linear\nmodels:\n  - model: @POST\n    parameters: {weight: 1, density: "
       "0.5}\n",
       2,
       {"line 4", "'density' is not used by linear"}},
      {"global parameter under a model",
       "merge_method: task_arithmetic\nbase_model: @BASE\nmodels:\n  - model: @POST\n    "
       "parameters:\n      weight: 1\n"
       "      lambda: 2\n",
       2,
       {"line 7", "'lambda' is a global parameter", "ignores it under a model"}},
      {"bare filter mapping",
       "merge_method: linear\nmodels:\n  - model: @POST\n    parameters:\n      weight: {filter: "
       "mlp, value: 0.5}\n",
       2,
       {"line 5", "bare {filter, value} mapping"}},
      {"duplicate parameter",
       "merge_method: linear\nmodels:\n  - model: @POST\n    parameters:\n      weight: 1\n      "
       "weight: 2\n",
       2,
       {"line 6", "duplicate parameter 'weight'"}},
      {"duplicate top key",
       "merge_method: linear\nmerge_method: linear\nmodels:\n  - model: @POST\n",
       2,
       {"line 2", "duplicate key 'merge_method'"}},
      {"wrong type",
       "merge_method: linear\nmodels:\n  - model: @POST\n    parameters: {weight: \"heavy\"}\n",
       2,
       {"line 4", "'weight' must be a number"}},
      {"out of range",
       "merge_method: task_arithmetic\nbase_model: @BASE\nmodels:\n  - model: @POST\n    "
       "parameters: {weight: 1, density: 1.5}\n",
       2,
       {"line 5", "'density' = 1.5 is out of range [0, 1]"}},
      {"out of range inside a gradient",
       "merge_method: task_arithmetic\nbase_model: @BASE\nparameters:\n  density: [0.5, "
       "2]\nmodels:\n  - model: @POST\n"
       "    parameters: {weight: 1}\n",
       2,
       {"line 4", "out of range"}},
      {"mixed list",
       "merge_method: linear\nparameters:\n  weight: [1, {value: 2}]\nmodels:\n  - model: @POST\n",
       2,
       {"line 3", "either a gradient"}},
      {"condition without value",
       "merge_method: linear\nparameters:\n  weight:\n    - filter: mlp\nmodels:\n  - model: "
       "@POST\n",
       2,
       {"line 4", "needs a 'value'"}},
      {"invalid yaml", "merge_method: linear\nmodels: [\n", 2, {"invalid YAML"}},
      {"missing method", "models:\n  - model: @POST\n", 2, {"merge_method is required"}},
      {"no models", "merge_method: linear\n", 2, {"needs `models:`"}},
      {"models and slices",
       "merge_method: linear\nmodels:\n  - model: @POST\nslices:\n  - sources: []\n",
       2,
       {"exactly one of models:, slices:"}},
      {"bad dtype",
       "merge_method: linear\ndtype: bf16\nmodels:\n  - model: @POST\n    parameters: {weight: "
       "1}\n",
       2,
       {"line 2", "unknown dtype 'bf16'", "did you mean bfloat16?"}},
      {"int64 dtype",
       "merge_method: linear\ndtype: int64\nmodels:\n  - model: @POST\n    parameters: {weight: "
       "1}\n",
       2,
       {"line 2", "int64 is not a floating dtype"}},
      {"union tokenizer",
       "merge_method: linear\ntokenizer_source: union\nmodels:\n  - model: @POST\n    parameters: "
       "{weight: 1}\n",
       2,
       {"line 2", "union is not supported yet", "base"}},
      {"tokenizer block union",
       "merge_method: linear\ntokenizer:\n  source: union\nmodels:\n  - model: @POST\n    "
       "parameters: {weight: 1}\n",
       2,
       {"line 3", "union", "not supported yet", "source: base"}},
      {"tokenizer block default source",
       "merge_method: linear\ntokenizer: {}\nmodels:\n  - model: @POST\n    "
       "parameters: {weight: 1}\n",
       2,
       {"line 2", "union (its default)"}},
      {"tokenizer tokens",
       "merge_method: linear\ntokenizer:\n  source: @POST\n  tokens:\n    <pad>: {source: "
       "@POST}\nmodels:\n  - model: @POST\n    parameters: {weight: 1}\n",
       2,
       {"line 5", "tokenizer.tokens", "not supported yet"}},
      {"tokenizer padding",
       "merge_method: linear\ntokenizer: {source: @POST, pad_to_multiple_of: 64}\nmodels:\n  - "
       "model: @POST\n    parameters: {weight: 1}\n",
       2,
       {"line 2", "pad_to_multiple_of", "not supported yet"}},
      {"tokenizer typo",
       "merge_method: linear\ntokenizer:\n  sorce: base\nmodels:\n  - model: @POST\n    "
       "parameters: {weight: 1}\n",
       2,
       {"line 3", "unknown key 'sorce'", "did you mean source?"}},
      {"tokenizer and tokenizer_source",
       "merge_method: linear\ntokenizer_source: base\ntokenizer:\n  source: base\nmodels:\n  - "
       "model: @POST\n    parameters: {weight: 1}\n",
       2,
       {"line 2", "not both"}},
      {"mapping ref",
       "merge_method: linear\nmodels:\n  - model: {path: x}\n    parameters: {weight: 1}\n",
       2,
       {"line 3", "mapping form of a model reference"}},
      {"residual_weight",
       "merge_method: passthrough\nslices:\n  - sources:\n      - model: @POST\n        "
       "layer_range: [0, 2]\n"
       "    residual_weight: 0.5\n",
       2,
       {"line 6", "residual_weight"}},
      {"layer_range without end",
       "merge_method: passthrough\nslices:\n  - sources:\n      - model: @POST\n        "
       "layer_range: [0]\n",
       2,
       {"line 5", "layer_range must be [start, end)"}},
      {"empty layer_range",
       "merge_method: passthrough\nslices:\n  - sources:\n      - model: @POST\n        "
       "layer_range: [1, 1]\n",
       2,
       {"line 5", "is empty"}},
      {"layer_range beyond the model",
       "merge_method: passthrough\nslices:\n  - sources:\n      - model: @POST\n        "
       "layer_range: [0, 3]\n",
       2,
       {"line 4", "exceeds the 2 layers"}},
      {"source without layer_range",
       "merge_method: passthrough\nslices:\n  - sources:\n      - model: @POST\n",
       2,
       {"line 4", "needs 'layer_range"}},
      {"unknown source key",
       "merge_method: passthrough\nslices:\n  - sources:\n      - model: @POST\n        "
       "layer_rang: [0, 2]\n",
       2,
       {"line 5", "did you mean layer_range?"}},
      {"modules",
       "merge_method: linear\nmodules:\n  text:\n    models: []\n",
       2,
       {"modules: (multi-module"}},
      {"chat_template",
       "merge_method: linear\nchat_template: chatml\nmodels:\n  - model: @POST\n",
       2,
       {"line 2", "chat_template is not supported yet"}},
      {"extension: conventions",
       "merge_method: linear\ndeltaedit: {conventions: papers}\nmodels:\n  - model: @POST\n    "
       "parameters: {weight: 1}\n",
       2,
       {"line 2", "did you mean paper?"}},
      {"extension: unknown key",
       "merge_method: linear\ndeltaedit: {sed: 3}\nmodels:\n  - model: @POST\n    parameters: "
       "{weight: 1}\n",
       2,
       {"line 2", "unknown key 'sed'", "did you mean seed?"}},
      {"extension: bad op",
       "merge_method: task_arithmetic\nbase_model: @BASE\nmodels:\n  - model: @POST\n    "
       "parameters: {weight: 1}\n"
       "    deltaedit:\n      ops: [\"dare:p=2\"]\n",
       2,
       {"line 7", "deltaedit.ops", "'dare'"}},
      {"extension: ops without a base",
       "merge_method: linear\nmodels:\n  - model: @POST\n    parameters: {weight: 1}\n    "
       "deltaedit: {ops: [\"dare\"]}\n",
       2,
       {"does not use a base model"}},
      {"negative random_seed",
       "merge_method: linear\nrandom_seed: -3\nmodels:\n  - model: @POST\n    parameters: {weight: "
       "1}\n",
       2,
       {"line 2", "random_seed"}},
      // Checks that need the models' headers (still before any tensor data is read).
      {"missing model directory",
       "merge_method: linear\nmodels:\n  - model: /nonexistent/model-dir\n    parameters: {weight: "
       "1}\n",
       1,
       {"line 3", "model directory '/nonexistent/model-dir' does not exist"}},
      {"hub name",
       "merge_method: linear\nmodels:\n  - model: meta-llama/Llama-3-8B\n    parameters: {weight: "
       "1}\n",
       1,
       {"line 3", "only local directories"}},
      {"task arithmetic without base",
       "merge_method: task_arithmetic\nmodels:\n  - model: @POST\n    parameters: {weight: 1}\n",
       2,
       {"line 1", "needs a base_model"}},
      {"passthrough with two models",
       "merge_method: passthrough\nmodels:\n  - model: @POST\n  - model: @BASE\n",
       2,
       {"passthrough takes exactly 1 model, and 2 are given"}},
      {"missing required weight",
       "merge_method: linear\nmodels:\n  - model: @POST\n  - model: @BASE\n    parameters: "
       "{weight: 1}\n",
       2,
       {"line 3", "missing required parameter weight for", "post."}},
      {"base joins linear without a weight",
       "merge_method: linear\nbase_model: @BASE\nmodels:\n  - model: @POST\n    parameters: "
       "{weight: 1}\n",
       2,
       {"missing required parameter weight", "base_model joins linear"}},
      {"slice lengths differ",
       "merge_method: linear\nslices:\n  - sources:\n      - model: @POST\n        layer_range: "
       "[0, 2]\n        parameters: "
       "{weight: 1}\n      - model: @BASE\n        layer_range: [0, 1]\n        parameters: "
       "{weight: 1}\n",
       2,
       {"line 7", "same length"}},
      {"tokenizer source not merged",
       "merge_method: linear\ntokenizer_source: @BF16\nmodels:\n  - model: @POST\n    parameters: "
       "{weight: 1}\n",
       2,
       {"line 2", "is not one of the merged models"}},
  };
  for (const auto& c : cases) {
    TempDir t;
    auto r = merge_cli(t, c.yaml, c.extra_args);
    EXPECT_EQ(r.status, c.status) << c.name << "\n" << r.err;
    for (const auto& n : c.needles)
      EXPECT_NE(r.err.find(n), std::string::npos) << c.name << ": no '" << n << "' in\n" << r.err;
    EXPECT_NE(r.err.find("merge.yaml"), std::string::npos)
        << c.name << ": the message names the config\n"
        << r.err;
    EXPECT_FALSE(fs::exists(t / "out")) << c.name;
  }
}

TEST(MergeConfig, FileProblemsExitOne) {
  TempDir t;
  // A truncated download: the header promises more bytes than the file has.
  fs::create_directories(t / "broken");
  fs::copy_file(fix("post/config.json"), t / "broken/config.json");
  const std::string bytes = read_file(fix("post/model.safetensors"));
  write_text(t / "broken/model.safetensors", bytes.substr(0, bytes.size() - 10));
  write_text(t / "merge.yaml", "merge_method: linear\nmodels:\n  - model: " +
                                   (t / "broken").string() + "\n    parameters: {weight: 1}\n");
  auto r = run_cli({"merge", (t / "merge.yaml").string(), "--out", (t / "out").string()});
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_NE(r.err.find("line 3"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(t / "out"));
  // Mixed architectures and layer counts are config errors naming the model's line.
  for (const std::string& cfg :
       {std::string("{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", "
                    "\"num_hidden_layers\": 2}"),
        std::string("{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
                    "\"num_hidden_layers\": 3}")}) {
    fs::remove_all(t / "other");
    fs::create_directories(t / "other");
    fs::copy_file(fix("post/model.safetensors"), t / "other/model.safetensors");
    write_text(t / "other/config.json", cfg);
    write_text(t / "merge.yaml", "merge_method: linear\nmodels:\n  - model: " + fix("post") +
                                     "\n    parameters: {weight: 1}\n  - model: " +
                                     (t / "other").string() + "\n    parameters: {weight: 1}\n");
    auto m = run_cli({"merge", (t / "merge.yaml").string(), "--out", (t / "out").string()});
    EXPECT_EQ(m.status, 2) << m.err;
    EXPECT_NE(m.err.find("line 5"), std::string::npos) << m.err;
    EXPECT_TRUE(m.err.find("architectures") != std::string::npos ||
                m.err.find("layer counts differ") != std::string::npos)
        << m.err;
    EXPECT_FALSE(fs::exists(t / "out"));
  }
  // A model without config.json.
  fs::remove(t / "other/config.json");
  auto n = run_cli({"merge", (t / "merge.yaml").string(), "--out", (t / "out").string()});
  EXPECT_EQ(n.status, 1) << n.err;
  EXPECT_NE(n.err.find("no config.json"), std::string::npos) << n.err;
  // An unreadable config file.
  auto u = run_cli({"merge", (t / "nope.yaml").string(), "--out", (t / "out").string()});
  EXPECT_EQ(u.status, 1) << u.err;
  EXPECT_FALSE(fs::exists(t / "out"));
}

TEST(MergeConfig, LenientTurnsUnknownKeysIntoWarnings) {
  TempDir t;
  const std::string yaml =
      "merge_method: linear\nembed_slerp: true\nmodels:\n  - model: @POST\n    parameters: "
      "{weight: 1, density: 0.5}\n"
      "    junk: 3\n";
  auto strict = merge_cli(t, yaml, {"--dry-run"});
  EXPECT_EQ(strict.status, 2) << strict.err;
  EXPECT_NE(strict.err.find("--lenient"), std::string::npos) << strict.err;
  auto lenient = merge_cli(t, yaml, {"--dry-run", "--lenient"});
  ASSERT_EQ(lenient.status, 0) << lenient.err;
  for (const char* k : {"'embed_slerp'", "'density'", "'junk'"})
    EXPECT_NE(lenient.err.find(k), std::string::npos) << k << "\n" << lenient.err;
  // Type errors stay errors.
  auto typed =
      merge_cli(t, "merge_method: linear\nmodels:\n  - model: @POST\n    parameters: {weight: x}\n",
                {"--lenient"});
  EXPECT_EQ(typed.status, 2);
}

TEST(MergeConfig, SeedFromRandomSeedExtensionAndFlag) {
  TempDir t;
  const std::string base =
      "merge_method: linear\nmodels:\n  - model: @POST\n    parameters: {weight: 1}\n";
  auto seed_of = [&](const std::string& yaml, std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--dry-run", "--json"});
    auto r = merge_cli(t, yaml, extra);
    EXPECT_EQ(r.status, 0) << r.err;
    return nlohmann::json::parse(r.out).at("seed").get<uint64_t>();
  };
  EXPECT_EQ(seed_of(base, {}), 0u);
  EXPECT_EQ(seed_of("random_seed: 42\n" + base, {}), 42u);
  EXPECT_EQ(seed_of("random_seed: 42\n" + base, {"--seed", "7"}), 7u);
  EXPECT_EQ(seed_of("random_seed: 42\ndeltaedit: {seed: 9}\n" + base, {}), 9u);
  EXPECT_EQ(seed_of("deltaedit: {seed: 9}\nrandom_seed: 42\n" + base, {}), 9u);
}

// `tokenizer: {source: ...}` with a base or model source is `tokenizer_source` (MERGE.md §1.1).
TEST(MergeConfig, TokenizerBlockWithASourceIsTokenizerSource) {
  const std::string models = "models:\n  - model: @POST\n    parameters: {weight: 1}\n";
  auto a = merge::parse_merge_config(
      subst("merge_method: task_arithmetic\nbase_model: @BASE\ntokenizer:\n  source: base\n" +
            models),
      "a.yaml");
  EXPECT_TRUE(a.tokenizer_is_base);
  ASSERT_TRUE(a.tokenizer_source);
  EXPECT_EQ(a.tokenizer_source->line, 4);
  auto b = merge::parse_merge_config(
      subst("merge_method: linear\ntokenizer: {source: @POST}\n" + models), "b.yaml");
  EXPECT_FALSE(b.tokenizer_is_base);
  ASSERT_TRUE(b.tokenizer_source);
  EXPECT_EQ(b.tokenizer_source->path, fix("post"));
  // Through the CLI: the tokenizer files are the named model's, as with tokenizer_source.
  TempDir t;
  for (const char* m : {"base", "post"}) {
    fs::copy(fix(m), t / m, fs::copy_options::recursive);
    write_text(t / m / "tokenizer_config.json", std::string("{\"from\": \"") + m + "\"}\n");
    write_text(t / m / "tokenizer.json", std::string("{\"model\": \"") + m + "\"}\n");
  }
  const std::string two = "models:\n  - model: " + (t / "base").string() +
                          "\n    parameters: {weight: 1}\n  - model: " + (t / "post").string() +
                          "\n    parameters: {weight: 1}\n";
  write_text(t / "m.yaml",
             "merge_method: linear\ntokenizer: {source: " + (t / "post").string() + "}\n" + two);
  write_text(t / "n.yaml",
             "merge_method: linear\ntokenizer_source: " + (t / "post").string() + "\n" + two);
  ASSERT_EQ(run_cli({"merge", (t / "m.yaml").string(), "--out", (t / "m").string()}).status, 0);
  ASSERT_EQ(run_cli({"merge", (t / "n.yaml").string(), "--out", (t / "n").string()}).status, 0);
  EXPECT_EQ(read_file(t / "m" / "tokenizer_config.json"), "{\"from\": \"post\"}\n");
  EXPECT_EQ(read_file(t / "m" / "tokenizer.json"), "{\"model\": \"post\"}\n");
  for (const auto& e : fs::directory_iterator(t / "n")) {
    const std::string f = e.path().filename().string();
    // deltaedit.json, README.md and the safetensors metadata quote the config text.
    if (f == "deltaedit.json" || f == "README.md" || f == "model.safetensors") continue;
    EXPECT_TRUE(read_file(e.path()) == read_file(t / "m" / f)) << f;
  }
  auto m = io::Checkpoint::open(t / "m"), n = io::Checkpoint::open(t / "n");
  ASSERT_EQ(m.names(), n.names());
  for (const auto& name : m.names()) {
    auto x = m.data(name), y = n.data(name);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << name;
  }
}

TEST(MergeConfig, ParsesTheDialect) {
  const std::string yaml = subst(
      "merge_method: task_arithmetic\n"
      "base_model: @BASE\n"
      "dtype: torch.bfloat16\n"
      "out_dtype: float16\n"
      "tokenizer_source: base\n"
      "parameters:\n"
      "  lambda: [0.5, 1.5]\n"
      "  normalize: true\n"
      "models:\n"
      "  - model: @POST\n"
      "    parameters:\n"
      "      weight:\n"
      "        - filter: self_attn\n"
      "          value: [0, 1]\n"
      "        - value: 0.3\n"
      "    deltaedit: {ops: [\"dare:p=0.5\"]}\n"
      "deltaedit: {conventions: paper, trim: tensor}\n");
  auto c = merge::parse_merge_config(yaml, "m.yaml");
  EXPECT_EQ(c.method_name, "task_arithmetic");
  EXPECT_EQ(c.dtype, io::DType::BF16);
  EXPECT_EQ(c.out_dtype, io::DType::F16);
  EXPECT_TRUE(c.tokenizer_is_base);
  EXPECT_EQ(c.conventions, merge::Conventions::Paper);
  ASSERT_EQ(c.models.size(), 1u);
  EXPECT_EQ(c.models[0].line, 10);
  EXPECT_EQ(c.models[0].ops, std::vector<std::string>{"dare:p=0.5"});
  const auto* w = merge::find_param(c.models[0].params, "weight");
  ASSERT_TRUE(w);
  ASSERT_EQ(w->kind, merge::ParamValue::Kind::Conditions);
  ASSERT_EQ(w->conditions.size(), 2u);
  EXPECT_EQ(w->conditions[0].filter, "self_attn");
  EXPECT_EQ(w->conditions[0].value.values, (std::vector<double>{0, 1}));
  EXPECT_FALSE(w->conditions[1].filter);
  const auto* n = merge::find_param(c.params, "normalize");
  ASSERT_TRUE(n);
  EXPECT_EQ(n->direct.values, std::vector<double>{1.0});  // bools coerce to 1/0
}

TEST(MergeConfig, Suggestions) {
  EXPECT_EQ(merge::edit_distance("desnity", "density"), 2u);
  EXPECT_EQ(merge::edit_distance("", "abc"), 3u);
  EXPECT_EQ(merge::closest("dare-ties", {"dare_ties", "ties", "dare_linear"}), "dare_ties");
  EXPECT_EQ(merge::closest("zzzzzz", {"weight", "density"}), std::nullopt);
}

TEST(MergeConfig, DeepNestingIsAnErrorNotACrash) {
  std::string deep =
      "merge_method: linear\nparameters:\n  weight: " + std::string(5000, '[') + "\n";
  EXPECT_THROW(merge::parse_merge_config(deep, "d.yaml"), Error);
}

// The fuzz seed corpus and byte-level mutations of it are refused only with deltaedit::Error
// (the libFuzzer target fuzz/merge_config_fuzz.cpp explores further under sanitizers).
TEST(MergeConfig, CorpusAndMutationsOnlyThrowTypedErrors) {
  const fs::path dir = fs::path(DELTAEDIT_SOURCE_DIR) / "fuzz/corpus/merge_config";
  std::vector<std::string> seeds;
  for (const auto& e : fs::directory_iterator(dir)) seeds.push_back(read_file(e.path()));
  ASSERT_GE(seeds.size(), 5u);
  std::mt19937 g(11);
  size_t parsed = 0, refused = 0;
  for (const auto& s : seeds)
    for (int k = 0; k < 300; ++k) {
      std::string m = s;
      const int edits = 1 + int(g() % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        const size_t at = g() % m.size();
        switch (g() % 4) {
          case 0:
            m[at] = char(g() % 256);
            break;
          case 1:
            m.erase(at, 1 + g() % 8);
            break;
          case 2:
            m.insert(at, std::string(1 + g() % 3, "[]{}:-,'\"&*!\n #"[g() % 16]));
            break;
          default:
            m.insert(at, m.substr(g() % m.size(), g() % 16));
            break;
        }
      }
      try {
        merge::parse_merge_config(m, "fuzz.yaml", {bool(k & 1)});
        ++parsed;
      } catch (const Error&) {
        ++refused;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "untyped exception " << e.what() << " on:\n" << m;
      }
    }
  EXPECT_GT(refused, 0u);
  EXPECT_GT(parsed + refused, 1000u);
}
