// approx --merge end to end on the shipped family (base, math-sft, order-sft): per model i of a
// merge config, the term of D_i = W_merge − W_i on model i's data against the true ΔL_i, checked
// against `eval` of the kept merge and of the model, the streamed path, a merge that is one of its
// models, and the validation before any work.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "../engine/engine_test_util.h"

using namespace deltaedit;
using namespace deltaedit::testing;
using nlohmann::json;

#ifdef DELTAEDIT_HAVE_TORCH

namespace {
const fs::path kZoo = fs::path(DELTAEDIT_SOURCE_DIR) / "models/zoo";
const std::string kMath = (kZoo / "math-sft").string(), kOrder = (kZoo / "order-sft").string(),
                  kMathData = (kZoo / "data/eval.jsonl").string(),
                  kOrderData = (kZoo / "data/order_eval.jsonl").string();

// task_arithmetic of the two experts over the base, written with absolute paths.
fs::path write_task_arithmetic(const fs::path& dir) {
  const fs::path p = dir / "ta.yaml";
  std::ofstream(p) << "merge_method: task_arithmetic\nbase_model: \"" << (kZoo / "base").string()
                   << "\"\nmodels:\n  - model: \"" << kMath << "\"\n    parameters: {weight: 0.6}\n"
                   << "  - model: \"" << kOrder
                   << "\"\n    parameters: {weight: 0.4}\ndtype: float32\n";
  return p;
}

std::vector<std::string> approx_args(const fs::path& config) {
  return {"approx",
          "--merge",
          config.string(),
          "--data",
          kMath + "=" + kMathData,
          "--data",
          kOrder + "=" + kOrderData,
          "--limit",
          "8",
          "--steps",
          "3",
          "--threads",
          "1",
          "--json"};
}

double eval_loss(const std::string& model, const std::string& data) {
  auto r = run_cli(
      {"eval", "--model", model, "--data", data, "--limit", "8", "--threads", "1", "--json"});
  EXPECT_EQ(r.status, 0) << r.err;
  return json::parse(r.out)["loss"].get<double>();
}

const json& expert(const json& r, const std::string& model) {
  for (const auto& e : r["experts"])
    if (e["model"] == model) return e;
  ADD_FAILURE() << "no model " << model << " in " << r.dump();
  return r["experts"][0];
}
}  // namespace

TEST(ApproxMerge, TermsSumTheirContributionsAndTrueLossChangesMatchEval) {
  TempDir t;
  const auto cfg = write_task_arithmetic(t.path);
  auto args = approx_args(cfg);
  args.insert(args.end(), {"--save-merge", (t / "merged").string()});
  const auto a = run_cli(args);
  ASSERT_EQ(a.status, 0) << a.err;
  const json r = json::parse(a.out);
  ASSERT_EQ(r["experts"].size(), 2u);
  EXPECT_EQ(r["method"], "task_arithmetic");
  ASSERT_TRUE(fs::exists(t / "merged/model.safetensors"));
  ASSERT_TRUE(fs::exists(t / "merged/deltaedit.json"));  // written by the merge writer
  for (const auto& [model, data] : {std::pair{kMath, kMathData}, std::pair{kOrder, kOrderData}}) {
    const json& e = expert(r, model);
    EXPECT_EQ(e["data"], data);
    // (1) The contributions add up to the term (a closed identity: the same f64 numbers summed).
    double s = 0;
    for (const auto& c : e["per_tensor"]) s += c["contribution"].get<double>();
    const double term = e["approximation_term"].get<double>();
    EXPECT_NEAR(s, term, 1e-9 * std::fabs(term)) << model;
    EXPECT_NE(term, 0.0) << model;
    // (2) ΔL_i against the CLI's own eval of the kept merge and of the model, on the same records.
    const double l_merge = eval_loss((t / "merged").string(), data),
                 l_model = eval_loss(model, data);
    const double want = l_merge - l_model, got = e["true_delta_loss"].get<double>();
    EXPECT_NE(want, 0.0) << model;
    EXPECT_NEAR(got, want, 1e-6 * std::fabs(want)) << model;
    EXPECT_NEAR(e["loss_post"].get<double>(), l_model, 1e-6 * l_model) << model;
    EXPECT_NEAR(e["loss_edit"].get<double>(), l_merge, 1e-6 * l_merge) << model;
    EXPECT_DOUBLE_EQ(e["gap"].get<double>(), got - term) << model;
  }
  // The plain output names both models and the contributions.
  args = approx_args(cfg);
  args.pop_back();  // no --json
  const auto text = run_cli(args);
  ASSERT_EQ(text.status, 0) << text.err;
  EXPECT_NE(text.out.find("model '" + kMath + "'"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("model '" + kOrder + "'"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("largest per-tensor contributions"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("L(W_merge) − L(W_i)"), std::string::npos) << text.out;
}

TEST(ApproxMerge, StreamedEqualsInMemory) {
  TempDir t;
  const auto cfg = write_task_arithmetic(t.path);
  auto args = approx_args(cfg);
  const auto m = run_cli(args);
  args.push_back("--streamed");
  const auto s = run_cli(args);
  ASSERT_EQ(m.status, 0) << m.err;
  ASSERT_EQ(s.status, 0) << s.err;
  const json rm = json::parse(m.out), rs = json::parse(s.out);
  for (const auto& model : {kMath, kOrder}) {
    const json &a = expert(rm, model), &b = expert(rs, model);
    for (const char* k :
         {"approximation_term", "true_delta_loss", "loss_post", "loss_edit", "intensity", "gap"})
      EXPECT_NEAR(b[k].get<double>(), a[k].get<double>(), 1e-6 * std::fabs(a[k].get<double>()))
          << model << " " << k;
    std::map<std::string, double> ca;
    for (const auto& c : a["per_tensor"])
      ca[c["name"].get<std::string>()] = c["contribution"].get<double>();
    ASSERT_EQ(b["per_tensor"].size(), ca.size()) << model;
    for (const auto& c : b["per_tensor"]) {
      const auto it = ca.find(c["name"].get<std::string>());
      ASSERT_NE(it, ca.end()) << c["name"];
      EXPECT_NEAR(c["contribution"].get<double>(), it->second, 1e-6 * std::fabs(it->second))
          << c["name"];
    }
  }
}

// linear with weight 1 on math-sft and 0 on order-sft is math-sft bit for bit (1·x + 0·y, / 1):
// D_math = 0, so its term and ΔL are exactly 0, while order-sft moves to math-sft.
TEST(ApproxMerge, AMergeThatIsOneOfItsModelsChangesNothingForIt) {
  TempDir t;
  const fs::path cfg = t / "one.yaml";
  std::ofstream(cfg) << "merge_method: linear\nmodels:\n  - model: \"" << kMath
                     << "\"\n    parameters: {weight: 1.0}\n  - model: \"" << kOrder
                     << "\"\n    parameters: {weight: 0.0}\ndtype: float32\n";
  const auto a = run_cli(approx_args(cfg));
  ASSERT_EQ(a.status, 0) << a.err;
  const json r = json::parse(a.out);
  const json& m = expert(r, kMath);
  EXPECT_EQ(m["approximation_term"].get<double>(), 0.0);
  EXPECT_EQ(m["true_delta_loss"].get<double>(), 0.0);
  EXPECT_EQ(m["gap"].get<double>(), 0.0);
  for (const auto& c : m["per_tensor"])
    EXPECT_EQ(c["contribution"].get<double>(), 0.0) << c["name"];
  // For order-sft the merge is math-sft: ΔL = L_order(math-sft) − L_order(order-sft).
  const json& o = expert(r, kOrder);
  const double want = eval_loss(kMath, kOrderData) - eval_loss(kOrder, kOrderData);
  EXPECT_NE(want, 0.0);
  EXPECT_NEAR(o["true_delta_loss"].get<double>(), want, 1e-6 * std::fabs(want));
}

TEST(ApproxMerge, ValidationBeforeAnyWork) {
  TempDir t;
  const auto cfg = write_task_arithmetic(t.path);
  const std::string merged = (t / "merged").string();
  auto check = [&](std::vector<std::string> args, const std::vector<std::string>& in_err) {
    args.insert(args.end(), {"--save-merge", merged});
    const auto r = run_cli(args);
    EXPECT_EQ(r.status, 2) << r.err;
    for (const auto& s : in_err)
      EXPECT_NE(r.err.find(s), std::string::npos) << s << " not in: " << r.err;
    EXPECT_FALSE(fs::exists(merged));  // refused before the merge ran
  };
  // A --data model that the config does not name: the error names it and lists the valid ones.
  auto args = approx_args(cfg);
  args[6] = "./nowhere=" + kOrderData;
  check(args, {"'./nowhere'", "'" + kMath + "'", "'" + kOrder + "'"});
  // Every model needs its data.
  args = approx_args(cfg);
  args.erase(args.begin() + 5, args.begin() + 7);
  check(args, {"missing", "'" + kOrder + "'"});
  // One model given twice, the second time spelled otherwise (the same directory).
  args = approx_args(cfg);
  args[6] = (fs::path(kMath) / ".").string() + "=" + kOrderData;
  check(args, {"twice", "'" + kMath + "'"});
  // --data without MODEL=.
  args = approx_args(cfg);
  args[6] = kOrderData;
  check(args, {"MODEL=FILE"});
  // --merge replaces --base/--post/--op.
  for (const auto& extra : std::vector<std::vector<std::string>>{
           {"--base", (kZoo / "base").string()}, {"--post", kMath}, {"--op", "dare:p=0.5"}}) {
    args = approx_args(cfg);
    args.insert(args.end(), extra.begin(), extra.end());
    check(args, {"--merge and " + extra[0]});
  }
  // --save-merge onto an existing directory.
  fs::create_directories(t / "exists");
  args = approx_args(cfg);
  args.insert(args.end(), {"--save-merge", (t / "exists").string()});
  const auto r = run_cli(args);
  EXPECT_EQ(r.status, 2) << r.err;
  EXPECT_NE(r.err.find("already exists"), std::string::npos) << r.err;
  // --help shows the --merge form.
  const auto h = run_cli({"approx", "--help"});
  EXPECT_EQ(h.status, 0);
  EXPECT_NE(h.out.find("approx --merge merge.yaml --data"), std::string::npos) << h.out;
}

#endif
