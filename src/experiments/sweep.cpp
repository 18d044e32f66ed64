#include "experiments/sweep.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <fstream>

#include <fmt/format.h>

#include "engine/edit_engine.h"
#include "experiments/grid.h"
#include "experiments/resumable.h"
#include "experiments/sweep_report.h"
#include "io/checkpoint.h"
#include "io/writer.h"
#include "model/evaluate.h"
#include "text/dataset.h"
#include "text/tokenizer.h"
#include "util/boundary.h"
#include "util/error.h"
#include "util/read_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::experiments {
namespace {

std::string num(double v) { return grid_label(v); }

std::vector<double> grid(const json& j, const char* key, std::vector<double> def) {
  return grid_values(j, key, std::move(def));
}

std::vector<double> range(double lo, double hi, double step) {
  std::vector<double> v;
  for (int i = 0;; ++i) {
    double x = lo + i * step;
    if (x > hi + 1e-9) break;
    v.push_back(std::round(x * 1e6) / 1e6);
  }
  return v;
}

}  // namespace

SweepConfig SweepConfig::from_json(const json& j, const fs::path& rel) {
  auto path = [&](const char* key, bool required) -> fs::path {
    if (!j.contains(key)) {
      if (required) throw Error(ErrorKind::Usage, std::string("sweep config lacks \"") + key + "\"");
      return {};
    }
    if (!j[key].is_string()) throw Error(ErrorKind::Usage, std::string("sweep config \"") + key + "\" must be a path string");
    fs::path p = j[key].get<std::string>();
    return p.is_absolute() || rel.empty() ? p : rel / p;
  };
  SweepConfig c;
  try {
    c.base = path("base", true);
    c.post = path("post", true);
    c.eval_data = path("eval_data", true);
    c.loss_data = path("loss_data", false);
    if (c.loss_data.empty()) c.loss_data = c.eval_data;
    c.seed = j.value("seed", c.seed);
    c.eval_examples = j.value("eval_examples", c.eval_examples);
    c.loss_examples = j.value("loss_examples", c.loss_examples);
    c.batch_size = j.value("batch_size", c.batch_size);
    c.max_new_tokens = j.value("max_new_tokens", c.max_new_tokens);
    c.steps = j.value("steps", c.steps);
    c.threads = j.value("threads", c.threads);
    c.loss = j.value("loss", c.loss);
    c.beta = j.value("beta", c.beta);
  } catch (const json::exception& e) {
    throw Error(ErrorKind::Usage, std::string("sweep config: ") + e.what());
  }
  if (!j.contains("experiments") || !j["experiments"].is_object())
    throw Error(ErrorKind::Usage, "sweep config needs an \"experiments\" object (keys F1, T1, F3, F4, F5, F6)");
  for (auto it = j["experiments"].begin(); it != j["experiments"].end(); ++it)
    if (!std::set<std::string>{"F1", "T1", "F3", "F4", "F5", "F6"}.count(it.key()))
      throw Error(ErrorKind::Usage, "unknown experiment '" + it.key() + "' (known: F1, T1, F3, F4, F5, F6)");
  c.experiments = j["experiments"];
  if (c.steps < 1) throw Error(ErrorKind::Usage, "sweep config: steps must be ≥ 1");
  if (c.loss != "causal" && c.loss != "dpo")
    throw Error(ErrorKind::Usage, "sweep config: \"loss\" must be \"causal\" or \"dpo\", not '" + c.loss + "'");
  return c;
}

json SweepConfig::to_json() const {
  json j{{"base", base.string()},       {"post", post.string()},          {"eval_data", eval_data.string()},
          {"loss_data", loss_data.string()}, {"seed", seed},               {"eval_examples", eval_examples},
          {"loss_examples", loss_examples}, {"batch_size", batch_size},      {"max_new_tokens", max_new_tokens},
          {"steps", steps},             {"threads", threads},             {"experiments", experiments}};
  // Only a DPO sweep records its loss, so configs written before the option still resume.
  if (loss != "causal") {
    j["loss"] = loss;
    j["beta"] = beta;
  }
  return j;
}

json full_grid_json() {
  return {{"F1", {{"p", range(0.1, 0.9, 0.1)}, {"k", {-1.0, -0.5, 0.0, 0.5, 0.8}}}},
          {"T1", {{"k", {0.5, 0.7, 0.9, 1.1, 1.3, 1.5}}, {"random_p", 0.5}}},
          {"F3", {{"p", {0.1, 0.3, 0.5, 0.7, 0.9}}, {"lowrank_ratio", 0.1}}},
          {"F4", {{"bits", {0, 1, 2, 3, 4, 5}}}},
          {"F5", {{"s", {0.5, 1.0, 1.5, 2.0, 2.5, 3.0}}}},
          {"F6", {{"alpha", range(-1.0, 1.0, 0.1)}}}};
}

json demo_config_json(const fs::path& zoo) {
  // A pair folder (base, post: the retrain pair) or the family folder (base, math-sft).
  const fs::path post = fs::exists(zoo / "post") || !fs::exists(zoo / "math-sft") ? zoo / "post" : zoo / "math-sft";
  return {{"base", (zoo / "base").string()},
          {"post", post.string()},
          {"eval_data", (zoo / "data/eval.jsonl").string()},
          {"loss_data", (zoo / "data/eval.jsonl").string()},
          {"seed", 1},
          {"eval_examples", 100},
          {"loss_examples", 32},
          {"batch_size", 16},
          {"max_new_tokens", 40},
          {"steps", 5},
          // One thread: on 2 cores shared with other work, OpenMP's spinning makes 2 threads slower.
          {"threads", 1},
          {"experiments",
           {{"F1", {{"p", {0.1, 0.3, 0.5, 0.7, 0.9}}, {"k", {-1.0, -0.5, 0.0, 0.5, 0.8}}}},
            {"T1", {{"k", {0.5, 0.7, 0.9, 1.1, 1.3, 1.5}}, {"random_p", 0.5}}},
            {"F3", {{"p", {0.1, 0.3, 0.5, 0.7, 0.9}}, {"lowrank_ratio", 0.1}}},
            {"F4", {{"bits", {0, 1, 2, 3, 4, 5}}}},
            {"F5", {{"s", {0.5, 1.0, 1.5, 2.0, 2.5, 3.0}}}},
            {"F6", {{"alpha", range(-1.0, 1.0, 0.2)}}}}}};
}

std::vector<SweepPoint> expand_points(const json& ex) {
  std::vector<SweepPoint> pts;
  auto add = [&](std::string e, std::string label, std::vector<std::string> ops, json params, bool acc = true) {
    std::string id = e + "/";
    bool first = true;
    for (auto it = params.begin(); it != params.end(); ++it) {
      if (it.value().is_null()) continue;
      id += (first ? "" : ",") + it.key() + "=" + (it.value().is_number() ? num(it.value().get<double>()) : it.value().get<std::string>());
      first = false;
    }
    pts.push_back({std::move(e), std::move(id), std::move(label), std::move(ops), std::move(params), acc});
  };
  if (ex.contains("F1"))
    for (double p : grid(ex["F1"], "p", range(0.1, 0.9, 0.1)))
      for (double k : grid(ex["F1"], "k", {-1, -0.5, 0, 0.5, 0.8}))
        add("F1", fmt::format("dare p={} k={}", num(p), num(k)), {fmt::format("dare:p={},k={}", num(p), num(k))},
            {{"p", p}, {"k", k}});
  if (ex.contains("T1")) {
    const double rp = ex["T1"].value("random_p", 0.5);
    for (double k : grid(ex["T1"], "k", {0.5, 0.7, 0.9, 1.1, 1.3, 1.5})) {
      add("T1", fmt::format("random k={}", num(k)), {fmt::format("dare:p={},k={}", num(rp), num(k))},
          {{"method", "random"}, {"k", k}});
      add("T1", fmt::format("biased by Δ k={}", num(k)), {fmt::format("biased:by=delta,k={}", num(k))},
          {{"method", "biased_delta"}, {"k", k}});
      add("T1", fmt::format("biased by Δ·∇ k={}", num(k)), {fmt::format("biased:by=grad,k={}", num(k))},
          {{"method", "biased_grad"}, {"k", k}});
    }
  }
  if (ex.contains("F3")) {
    for (const char* m : {"dare", "drop", "magnitude"})
      for (double p : grid(ex["F3"], "p", {0.1, 0.3, 0.5, 0.7, 0.9}))
        add("F3", fmt::format("{} p={}", m, num(p)), {fmt::format("{}:p={}", m, num(p))}, {{"method", m}, {"p", p}},
            false);
    add("F3", "bitdelta", {"bitdelta"}, {{"method", "bitdelta"}, {"p", nullptr}}, false);
    const double r = ex["F3"].value("lowrank_ratio", 0.1);
    add("F3", fmt::format("lowrank ratio={}", num(r)), {fmt::format("lowrank:ratio={},method=exact", num(r))},
        {{"method", "lowrank"}, {"p", nullptr}}, false);
  }
  if (ex.contains("F4"))
    for (double b : grid(ex["F4"], "bits", {0, 1, 2, 3, 4, 5}))
      add("F4", fmt::format("bitdelta bits={}", num(b)), {fmt::format("bitdelta:bits={}", int(b))}, {{"bits", b}});
  if (ex.contains("F5")) {
    for (double s : grid(ex["F5"], "s", {0.5, 1, 1.5, 2, 2.5, 3}))
      add("F5", fmt::format("bitdelta s={}", num(s)), {fmt::format("bitdelta:s={}", num(s))},
          {{"variant", "multiple"}, {"s", s}});
    add("F5", "resample uniform", {"resample:dist=uniform"}, {{"variant", "uniform"}, {"s", nullptr}});
    add("F5", "resample normal", {"resample:dist=normal"}, {{"variant", "normal"}, {"s", nullptr}});
  }
  if (ex.contains("F6"))
    for (double a : grid(ex["F6"], "alpha", range(-1.0, 1.0, 0.1)))
      add("F6", fmt::format("scale α={}", num(a)), {fmt::format("scale:alpha={}", num(a))}, {{"alpha", a}});
  // Validate every op before any work.
  for (const auto& p : pts) engine::OpChain::build(p.ops, 0, "", "");
  return pts;
}

json run_sweep(const SweepConfig& cfg, const fs::path& out, const SweepProgress& progress) {
  auto t_start = std::chrono::steady_clock::now();
  auto points = expand_points(cfg.experiments);
  torch::set_num_threads(cfg.threads);
  fs::create_directories(out / "points");
  // A resumed sweep must be the same sweep.
  const json cfg_json = cfg.to_json();
  claim_run_folder(out / "sweep-config.json", cfg_json, out, "sweep");
  auto base = io::Checkpoint::open(cfg.base);
  auto post = io::Checkpoint::open(cfg.post);
  auto tok = text::Tokenizer::load(cfg.post);
  auto eval_records = text::load_jsonl(cfg.eval_data, &tok, {0, cfg.eval_examples});
  auto loss_records = text::load_jsonl(cfg.loss_data, &tok, {0, cfg.loss_examples});
  model::EvalSet set;
  if (cfg.loss == "dpo") {
    auto ref = model::Model::load(base);
    set = model::make_eval_set(loss_records, cfg.batch_size, model::LossKind::DPO, &ref, cfg.beta);
  } else {
    set = model::make_eval_set(loss_records, cfg.batch_size, model::LossKind::CausalLM);
  }
  auto m = model::Model::load(post);

  // Reference models, measured once.
  const json models = cached_json(out / "points/models.json", [&] {
    if (progress) progress(0, points.size(), "base and post models");
    auto bm = model::Model::load(base);
    json mo;
    mo["base"] = {{"accuracy", model::dataset_accuracy(bm, tok, eval_records, cfg.max_new_tokens).accuracy()},
                  {"loss", model::dataset_loss(bm, set)}};
    mo["post"] = {{"accuracy", model::dataset_accuracy(m, tok, eval_records, cfg.max_new_tokens).accuracy()},
                  {"loss", model::dataset_loss(m, set)}};
    return mo;
  });
  // ∇L(W_post) for the biased-by-gradient edits.
  std::optional<io::SafetensorsFile> grad;
  bool need_grad = false;
  for (const auto& p : points) need_grad |= engine::OpChain::build(p.ops, 0, "", "").needs_grad();
  if (need_grad) {
    const fs::path gfile = out / "grad_post.safetensors";
    if (!fs::exists(gfile)) {
      auto g = model::dataset_gradients(m, set);
      std::vector<io::PlannedTensor> plan;
      for (const auto& [n, v] : g.grads) plan.push_back({n, io::DType::F32, v.shape});
      io::Staging st(gfile, {}, 0);
      io::SafetensorsWriter w(st.create("g"), gfile.string(), plan, {{"deltaedit.loss", num(g.loss())}});
      for (const auto& [n, v] : g.grads) w.write(n, std::as_bytes(std::span(v.values)));
      w.finish();
      st.commit_file("g");
    }
    grad = io::SafetensorsFile::open(gfile);
  }

  auto saved = m.state();
  json experiments = json::object();
  size_t done = 0;
  for (const auto& p : points) {
    io::check_interrupted();
    const json r = cached_json(out / "points" / (safe_name(p.id) + ".json"), [&] {
      if (progress) progress(done, points.size(), p.label);
      auto t0 = std::chrono::steady_clock::now();
      auto chain = engine::OpChain::build(p.ops, cfg.seed, "", "");
      auto inc = engine::edit_increments(chain, base, post, grad ? &*grad : nullptr);
      auto a = model::approximation_term(m, set, inc.d, inc.delta_sumsq, cfg.steps, model::Rule::Left, false);
      json acc = nullptr;
      if (p.accuracy) {
        for (const auto& [n, d] : inc.d)
          if (m.has_param(n)) m.add_(n, torch::from_blob(const_cast<float*>(d.data()), m.param(n).sizes(), torch::kFloat32), 1.0);
        acc = model::dataset_accuracy(m, tok, eval_records, cfg.max_new_tokens).accuracy();
        m.load_state(saved);
      }
      json pt = json::array();
      for (const auto& [n, c] : a.per_tensor) pt.push_back({{"name", n}, {"contribution", c}});
      return json{{"id", p.id},
           {"experiment", p.experiment},
           {"label", p.label},
           {"ops", p.ops},
           {"params", p.params},
           {"accuracy", acc},
           {"loss", a.loss_edit},
           {"loss_post", a.loss_post},
           {"approximation_term", a.approximation_term},
           {"true_delta_loss", a.true_delta_loss},
           {"gap", a.gap},
           {"intensity", a.intensity},
           {"per_tensor", pt},
           {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    }, 1);
    experiments[p.experiment].push_back(r);
    ++done;
    if (progress) progress(done, points.size(), p.label);
  }
  json results{{"config", cfg_json},
               {"models", models},
               {"experiments", experiments},
               {"timing", {{"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count()},
                           {"points", points.size()}}}};
  io::replace_file(out / "results.json", results.dump(2) + "\n");
  // The results gather the points read back from OUT/points: a malformed one is named.
  util::at_boundary((out / "results.json").string(), "", [&] { render_sweep_report(results, out); });
  return results;
}

}  // namespace deltaedit::experiments
