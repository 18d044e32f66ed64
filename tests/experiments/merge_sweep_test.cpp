// M1 on a tiny family: merges whose result is known in closed form (λ = 0 is the base, slerp's
// endpoints are the experts) give the loss changes those closed forms imply; the per-tensor
// contributions add up to each term; the sweep resumes and refuses another sweep's folder.
#include <cmath>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "experiments/merge_sweep.h"
#include "util/error.h"
#include "zoo/train.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace deltaedit;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "deltaedit-m1-XXXXXX").string();
    path = ::mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

zoo::FamilyOptions tiny() {
  zoo::FamilyOptions o;
  o.hidden = 32;
  o.intermediate = 64;
  o.layers = 1;
  o.heads = 2;
  o.kv_heads = 1;
  o.vocab = 300;
  o.pretrain_steps = 3;
  o.sft_steps = 3;
  o.dpo_steps = 1;
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
  // An SFT learning rate large enough that three steps move the experts visibly apart.
  o.sft_lr = 3e-2;
  return o;
}

}  // namespace

TEST(MergeSweep, ClosedFormMergesResumeAndValidation) {
  TempDir t;
  const fs::path fam = t.path / "family";
  zoo::build_family(fam, tiny());
  json j = experiments::merge_demo_config_json(fam);
  j["eval_examples"] = 4;
  j["loss_examples"] = 8;
  j["max_new_tokens"] = 8;
  j["steps"] = 2;
  j["grid"] = {{"task_arithmetic", {{"lambda", {0.0}}}}, {"slerp", {{"t", {0.0, 1.0}}}}, {"ties", {{"density", {0.5}}}}};
  const auto cfg = experiments::MergeSweepConfig::from_json(j, {});
  const auto pts = experiments::merge_points(cfg);
  ASSERT_EQ(pts.size(), 4u);
  const fs::path out = t.path / "m1";
  const json r = experiments::run_merge_sweep(cfg, out);
  ASSERT_EQ(r["points"].size(), 4u);
  const json& mo = r["models"];
  auto task = [&](const std::string& id, const char* name) -> const json& {
    for (const auto& p : r["points"])
      if (p["id"] == id) return p["tasks"][name];
    ADD_FAILURE() << "no point " << id;
    return r["points"][0]["tasks"][name];
  };
  // The true ΔL_i is measured at W_merge itself (not at the path's end W_i + fl(W_merge − W_i));
  // the merged model's loss and the base's are computed by separate passes, so 1e-6.
  constexpr double kEndpoint = 1e-6;
  for (const char* name : {"math", "order"}) {
    // λ = 0: the merge is the base, so ΔL_i = L_i(base) − L_i(W_i).
    const double want = mo["base"][name]["loss"].get<double>() - mo[name][name]["loss"].get<double>();
    EXPECT_NEAR(task("M1/task_arithmetic_lambda=0", name)["true_delta_loss"].get<double>(), want, kEndpoint * std::abs(want)) << name;
    EXPECT_EQ(task("M1/task_arithmetic_lambda=0", name)["accuracy"], mo["base"][name]["accuracy"]) << name;
    EXPECT_NE(want, 0.0) << name;  // the experts did move
  }
  // slerp t = 0 is the first expert (math), t = 1 the second (order): no change on that task.
  EXPECT_EQ(task("M1/slerp_t=0", "math")["true_delta_loss"].get<double>(), 0.0);
  EXPECT_EQ(task("M1/slerp_t=0", "math")["approximation_term"].get<double>(), 0.0);
  EXPECT_EQ(task("M1/slerp_t=0", "math")["accuracy"], mo["math"]["math"]["accuracy"]);
  EXPECT_EQ(task("M1/slerp_t=1", "order")["true_delta_loss"].get<double>(), 0.0);
  EXPECT_EQ(task("M1/slerp_t=1", "order")["approximation_term"].get<double>(), 0.0);
  // And on the other task the slerp endpoints are the other expert.
  EXPECT_NEAR(task("M1/slerp_t=0", "order")["true_delta_loss"].get<double>(),
              mo["math"]["order"]["loss"].get<double>() - mo["order"]["order"]["loss"].get<double>(),
              kEndpoint * mo["math"]["order"]["loss"].get<double>());
  // Per-tensor contributions add up to each term.
  for (const auto& p : r["points"])
    for (const char* name : {"math", "order"}) {
      double s = 0;
      for (const auto& c : p["tasks"][name]["per_tensor"]) s += c["contribution"].get<double>();
      const double term = p["tasks"][name]["approximation_term"].get<double>();
      EXPECT_NEAR(s, term, 1e-9 * std::max(1.0, std::abs(term))) << p["id"] << " " << name;
      EXPECT_TRUE(std::isfinite(p["tasks"][name]["true_delta_loss"].get<double>()));
    }
  EXPECT_FALSE(fs::exists(out / "merges" / "M1_ties_density=0.5"));  // measured merges are removed
  // Resume: every point is read back, the summary is the same.
  const auto stamp = fs::last_write_time(out / "merge-points" / "M1_ties_density=0.5.json");
  const json again = experiments::run_merge_sweep(cfg, out);
  EXPECT_EQ(again["points"], r["points"]);
  EXPECT_EQ(fs::last_write_time(out / "merge-points" / "M1_ties_density=0.5.json"), stamp);
  // Another sweep in the same folder is refused; a bad grid is refused before any work.
  json other = j;
  other["seed"] = 2;
  EXPECT_THROW(experiments::run_merge_sweep(experiments::MergeSweepConfig::from_json(other, {}), out), Error);
  json bad = j;
  bad["grid"] = {{"dare-ties", json::object()}};
  EXPECT_THROW(experiments::MergeSweepConfig::from_json(bad, {}), Error);
  bad = j;
  bad["experts"].erase(1);
  EXPECT_THROW(experiments::MergeSweepConfig::from_json(bad, {}), Error);
}
