#include "experiments/merge_sweep.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "engine/merge_run.h"
#include "experiments/grid.h"
#include "experiments/merge_approx.h"
#include "experiments/resumable.h"
#include "io/checkpoint.h"
#include "io/convert.h"
#include "io/safetensors.h"
#include "io/writer.h"
#include "merge/config.h"
#include "merge/plan.h"
#include "model/evaluate.h"
#include "text/dataset.h"
#include "text/tokenizer.h"
#include "util/error.h"
#include "util/read_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::experiments {
namespace {

std::string num(double v) { return grid_label(v); }

std::vector<double> values(const json& g, const char* key, std::vector<double> def) {
  return grid_values(g, key, std::move(def), "merge grid");
}


// YAML scalars for paths: double-quoted with backslashes and quotes escaped.
std::string quoted(const fs::path& p) {
  std::string s = "\"";
  for (char c : p.string()) {
    if (c == '"' || c == '\\') s += '\\';
    s += c;
  }
  return s + "\"";
}

}  // namespace

MergeSweepConfig MergeSweepConfig::from_json(const json& j, const fs::path& rel) {
  auto path = [&](const json& o, const char* key) -> fs::path {
    if (!o.contains(key) || !o.at(key).is_string())
      throw Error(ErrorKind::Usage, fmt::format("merge sweep config lacks the path \"{}\"", key));
    fs::path p = o.at(key).get<std::string>();
    return p.is_relative() && !rel.empty() ? rel / p : p;
  };
  MergeSweepConfig c;
  c.base = path(j, "base");
  if (!j.contains("experts") || !j.at("experts").is_array() || j.at("experts").size() != 2)
    throw Error(ErrorKind::Usage, "merge sweep config needs \"experts\": a list of exactly two experts");
  for (const auto& e : j.at("experts")) {
    if (!e.contains("name") || !e.at("name").is_string())
      throw Error(ErrorKind::Usage, "each merge sweep expert needs a \"name\"");
    c.experts.push_back({e.at("name").get<std::string>(), path(e, "model"), path(e, "eval_data"), path(e, "loss_data")});
  }
  if (c.experts[0].name == c.experts[1].name)
    throw Error(ErrorKind::Usage, "the two merge sweep experts need different names");
  c.seed = j.value("seed", c.seed);
  c.eval_examples = j.value("eval_examples", c.eval_examples);
  c.loss_examples = j.value("loss_examples", c.loss_examples);
  c.batch_size = j.value("batch_size", c.batch_size);
  c.max_new_tokens = j.value("max_new_tokens", c.max_new_tokens);
  c.steps = j.value("steps", c.steps);
  c.threads = j.value("threads", c.threads);
  c.grid = j.value("grid", json::object());
  for (auto it = c.grid.begin(); it != c.grid.end(); ++it)
    if (it.key() != "task_arithmetic" && it.key() != "ties" && it.key() != "dare_ties" && it.key() != "della" &&
        it.key() != "model_stock" && it.key() != "slerp")
      throw Error(ErrorKind::Usage,
                  fmt::format("merge sweep grid: unknown method '{}' (task_arithmetic, ties, dare_ties, della, "
                              "model_stock, slerp)",
                              it.key()));
  if (c.steps < 1) throw Error(ErrorKind::Usage, "merge sweep \"steps\" must be at least 1");
  return c;
}

json MergeSweepConfig::to_json() const {
  json ex = json::array();
  for (const auto& e : experts)
    ex.push_back({{"name", e.name},
                  {"model", e.model.string()},
                  {"eval_data", e.eval_data.string()},
                  {"loss_data", e.loss_data.string()}});
  return {{"base", base.string()},       {"experts", ex},
          {"seed", seed},                {"eval_examples", eval_examples},
          {"loss_examples", loss_examples}, {"batch_size", batch_size},
          {"max_new_tokens", max_new_tokens}, {"steps", steps},
          {"threads", threads},          {"grid", grid}};
}

json merge_demo_config_json(const fs::path& fam) {
  return {{"base", (fam / "base").string()},
          {"experts",
           {{{"name", "math"},
             {"model", (fam / "math-sft").string()},
             {"eval_data", (fam / "data/eval.jsonl").string()},
             {"loss_data", (fam / "data/eval.jsonl").string()}},
            {{"name", "order"},
             {"model", (fam / "order-sft").string()},
             {"eval_data", (fam / "data/order_eval.jsonl").string()},
             {"loss_data", (fam / "data/order_eval.jsonl").string()}}}},
          {"seed", 1},
          {"eval_examples", 100},
          {"loss_examples", 32},
          {"batch_size", 16},
          {"max_new_tokens", 40},
          {"steps", 5},
          {"threads", 1},
          {"grid",
           {{"task_arithmetic", {{"lambda", {0.5, 0.75, 1.0}}}},
            {"ties", {{"density", {0.2, 0.5, 0.8}}}},
            {"dare_ties", {{"drop", {0.5, 0.9}}}},
            {"della", {{"density", {0.5}}}},
            {"model_stock", json::object()},
            {"slerp", {{"t", {0.5}}}}}}};
}

std::vector<MergePoint> merge_points(const MergeSweepConfig& cfg) {
  const std::string base = quoted(cfg.base), a = quoted(cfg.experts[0].model), b = quoted(cfg.experts[1].model);
  const std::string tail = fmt::format("dtype: float32\ndeltaedit:\n  seed: {}\n", cfg.seed);
  // Two experts over the base, with per-model parameters (the same for both).
  auto two = [&](const std::string& method, const std::string& per_model, const std::string& global) {
    std::string y = fmt::format("merge_method: {}\nbase_model: {}\nmodels:\n", method, base);
    for (const auto& m : {a, b}) {
      y += fmt::format("  - model: {}\n", m);
      if (!per_model.empty()) y += fmt::format("    parameters: {{{}}}\n", per_model);
    }
    if (!global.empty()) y += fmt::format("parameters: {{{}}}\n", global);
    return y + tail;
  };
  std::vector<MergePoint> pts;
  auto add = [&](std::string method, std::string label, json params, std::string yaml) {
    std::string id = "M1/" + method;
    for (auto it = params.begin(); it != params.end(); ++it) id += "_" + it.key() + "=" + num(it.value().get<double>());
    pts.push_back({std::move(id), std::move(method), std::move(label), std::move(params), std::move(yaml)});
  };
  const json& g = cfg.grid;
  if (g.contains("task_arithmetic"))
    for (double l : values(g["task_arithmetic"], "lambda", {0.5, 1.0}))
      add("task_arithmetic", fmt::format("task arithmetic λ={}", num(l)), {{"lambda", l}},
          two("task_arithmetic", fmt::format("weight: {}", num(l)), ""));
  if (g.contains("ties"))
    for (double d : values(g["ties"], "density", {0.2, 0.5, 0.8}))
      add("ties", fmt::format("TIES density={}", num(d)), {{"density", d}},
          two("ties", fmt::format("weight: 1.0, density: {}", num(d)), ""));
  if (g.contains("dare_ties"))
    for (double p : values(g["dare_ties"], "drop", {0.5, 0.9}))
      add("dare_ties", fmt::format("DARE-TIES drop={}", num(p)), {{"drop", p}},
          two("dare_ties", fmt::format("weight: 1.0, density: {}", num(1.0 - p)), ""));
  if (g.contains("della"))
    for (double d : values(g["della"], "density", {0.5}))
      add("della", fmt::format("DELLA density={}", num(d)), {{"density", d}},
          two("della", fmt::format("weight: 1.0, density: {}, epsilon: 0.1", num(d)), ""));
  if (g.contains("model_stock")) add("model_stock", "model stock", json::object(), two("model_stock", "", ""));
  if (g.contains("slerp"))
    for (double t : values(g["slerp"], "t", {0.5}))
      add("slerp", fmt::format("slerp t={}", num(t)), {{"t", t}},
          fmt::format("merge_method: slerp\nbase_model: {}\nmodels:\n  - model: {}\n  - model: {}\nparameters: "
                      "{{t: {}}}\n",
                      a, a, b, num(t)) +
              tail);
  return pts;
}

double delta_over_weight(const fs::path& base_dir, const fs::path& post_dir) {
  const auto base = io::Checkpoint::open(base_dir), post = io::Checkpoint::open(post_dir);
  double dd = 0, ww = 0;
  std::vector<float> b, q;
  for (const auto& n : base.names()) {
    if (!post.contains(n)) continue;
    const auto& bi = base.info(n);
    const auto& pi = post.info(n);
    if (bi.shape != pi.shape) continue;
    b.resize(bi.numel());
    q.resize(pi.numel());
    io::to_f32(base.data(n), bi.dtype, b);
    io::to_f32(post.data(n), pi.dtype, q);
    for (size_t i = 0; i < b.size(); ++i) {
      const double d = double(q[i]) - double(b[i]);
      dd += d * d;
      ww += double(b[i]) * double(b[i]);
    }
  }
  return ww > 0 ? std::sqrt(dd / ww) : 0.0;
}

json run_merge_sweep(const MergeSweepConfig& cfg, const fs::path& out, const MergeSweepProgress& progress) {
  const auto t_start = std::chrono::steady_clock::now();
  const auto points = merge_points(cfg);
  torch::set_num_threads(cfg.threads);
  fs::create_directories(out / "merge-points");
  const json cfg_json = cfg.to_json();
  claim_run_folder(out / "merge-config.json", cfg_json, out, "merge sweep");
  // Every config is validated (and planned against the checkpoints) before any model is run.
  for (const auto& p : points)
    merge::build_plan(merge::parse_merge_config(p.yaml, p.id + ".yaml"), merge::PlanOptions{});

  auto tok = text::Tokenizer::load(cfg.experts[0].model);
  struct Task {
    const MergeExpert* e;
    std::vector<text::Record> eval;
    model::EvalSet set;
    io::Checkpoint ck;
    model::Model m;
  };
  const auto base_ck = io::Checkpoint::open(cfg.base);
  auto base_model = model::Model::load(base_ck);
  std::vector<Task> tasks;
  for (const auto& e : cfg.experts) {
    auto recs = text::load_jsonl(e.loss_data, &tok, {0, cfg.loss_examples});
    auto ck = io::Checkpoint::open(e.model);
    auto m = model::Model::load(ck);
    tasks.push_back({&e, text::load_jsonl(e.eval_data, &tok, {0, cfg.eval_examples}),
                     model::make_eval_set(recs, cfg.batch_size, model::LossKind::CausalLM), std::move(ck),
                     std::move(m)});
  }
  // Every model on every task: the base, each expert, then the merges.
  auto measure_all = [&](model::Model& m) {
    json r = json::object();
    for (auto& t : tasks)
      r[t.e->name] = {{"accuracy", model::dataset_accuracy(m, tok, t.eval, cfg.max_new_tokens).accuracy()},
                      {"loss", model::dataset_loss(m, t.set)}};
    return r;
  };
  const json models = cached_json(out / "merge-points/models.json", [&] {
    if (progress) progress(0, points.size(), "base and experts");
    json mo;
    mo["base"] = measure_all(base_model);
    for (auto& t : tasks) mo[t.e->name] = measure_all(t.m);
    return mo;
  });

  json results = json::array();
  size_t done = 0;
  for (const auto& p : points) {
    io::check_interrupted();
    const json r = cached_json(out / "merge-points" / (safe_name(p.id) + ".json"), [&] {
      if (progress) progress(done, points.size(), p.label);
      const auto t0 = std::chrono::steady_clock::now();
      const fs::path mdir = out / "merges" / safe_name(p.id);
      if (fs::exists(mdir)) fs::remove_all(mdir);  // a merge interrupted before it was measured
      fs::create_directories(mdir.parent_path());
      auto plan = merge::build_plan(merge::parse_merge_config(p.yaml, p.id + ".yaml"), merge::PlanOptions{});
      engine::RunOptions ro;
      ro.out = mdir;
      ro.threads = unsigned(std::max(1, cfg.threads));
      const auto run = engine::run_merge(plan, ro);
      const auto merged_ck = io::Checkpoint::open(mdir);
      auto merged = model::Model::load(merged_ck);
      json per_task = json::object();
      for (auto& t : tasks) {
        // D_i = W_merge − W_i, on task i's loss data.
        const auto a = merge_expert_approx(t.m, {t.ck, merged_ck, &base_ck}, t.set,
                                           {cfg.steps, model::Rule::Left, false});
        json pt = json::array();
        for (const auto& [n, c] : a.per_tensor) pt.push_back({{"name", n}, {"contribution", c}});
        per_task[t.e->name] = {
            {"accuracy", model::dataset_accuracy(merged, tok, t.eval, cfg.max_new_tokens).accuracy()},
            {"loss", a.loss_edit},
            {"loss_expert", a.loss_post},
            {"approximation_term", a.approximation_term},
            {"true_delta_loss", a.true_delta_loss},
            {"gap", a.gap},
            {"intensity", a.intensity},
            {"per_tensor", pt}};
      }
      fs::remove_all(mdir);  // measured: only its figures are kept
      return json{{"id", p.id},
           {"method", p.method},
           {"label", p.label},
           {"params", p.params},
           {"config", p.yaml},
           {"warnings", run.warnings},
           {"tasks", per_task},
           {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    }, 1);
    results.push_back(r);
    ++done;
    if (progress) progress(done, points.size(), p.label);
  }
  std::error_code ec;
  fs::remove(out / "merges", ec);  // empty once every point is measured
  json summary{{"config", cfg_json},
               {"models", models},
               {"points", results},
               {"timing",
                {{"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()},
                 {"points", points.size()}}}};
  const fs::path rf = out / "merge-results.json";
  io::replace_file(rf, summary.dump(2) + "\n");
  return summary;
}

}  // namespace deltaedit::experiments
