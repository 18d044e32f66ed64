// eval, grad and approx with --streamed end to end: the same numbers and files as in memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "../engine/engine_test_util.h"
#include "io/convert.h"
#include "io/safetensors.h"
#include "util/read_file.h"

using namespace deltaedit;
using namespace deltaedit::testing;
using nlohmann::json;

#ifdef DELTAEDIT_HAVE_TORCH

namespace {
const fs::path kPair = fs::path(DELTAEDIT_SOURCE_DIR) / "models/zoo/retrain";

std::vector<float> values(const io::SafetensorsFile& f, const io::TensorInfo& t) {
  std::vector<float> v(t.numel());
  io::to_f32(f.data(t), t.dtype, v);
  return v;
}

// The command as given and with --streamed (and `extra`): both must succeed; their JSON outputs
// and the streamed run's stderr.
struct BothRuns {
  json memory, streamed;
  std::string streamed_err;
};
void run_both(const std::vector<std::string>& args, BothRuns& r,
              const std::vector<std::string>& extra = {}) {
  auto m = run_cli(args);
  auto sargs = args;
  sargs.push_back("--streamed");
  sargs.insert(sargs.end(), extra.begin(), extra.end());
  auto st = run_cli(sargs);
  ASSERT_EQ(m.status, 0) << m.err;
  ASSERT_EQ(st.status, 0) << st.err;
  r.memory = json::parse(m.out);
  r.streamed = json::parse(st.out);
  r.streamed_err = st.err;
}
}  // namespace

TEST(StreamedCli, EvalGradApproxEqualTheInMemoryRun) {
  TempDir t;
  const std::string data = (kPair / "data/eval.jsonl").string(), post = (kPair / "post").string(),
                    base = (kPair / "base").string();
  const std::vector<std::string> eval = {"eval", "--model", post, "--data",
                                         data,   "--limit", "12", "--json"};
  BothRuns e;
  ASSERT_NO_FATAL_FAILURE(run_both(eval, e));
  const json &j1 = e.memory, &j2 = e.streamed;
  EXPECT_NEAR(j2["loss"].get<double>(), j1["loss"].get<double>(), 1e-6 * j1["loss"].get<double>());
  EXPECT_EQ(j2["tokens"], j1["tokens"]);

  std::vector<std::string> grad = {"grad",    "--model", post,           "--data", data,
                                   "--limit", "12",      "--batch-size", "5"};
  auto g1a = grad, g2a = grad;
  g1a.insert(g1a.end(), {"--out", (t / "mem.safetensors").string()});
  g2a.insert(g2a.end(), {"--out", (t / "str.safetensors").string(), "--streamed"});
  auto g1 = run_cli(g1a), g2 = run_cli(g2a);
  ASSERT_EQ(g1.status, 0) << g1.err;
  ASSERT_EQ(g2.status, 0) << g2.err;
  auto f1 = io::SafetensorsFile::open(t / "mem.safetensors"),
       f2 = io::SafetensorsFile::open(t / "str.safetensors");
  ASSERT_EQ(f1.header().tensors.size(), f2.header().tensors.size());
  for (const auto& a : f1.header().tensors) {
    const auto* b = f2.header().find(a.name);
    ASSERT_NE(b, nullptr) << a.name;
    EXPECT_EQ(a.shape, b->shape) << a.name;
    auto va = values(f1, a), vb = values(f2, *b);
    double err = 0, norm = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      err = std::max(err, std::fabs(double(va[i]) - double(vb[i])));
      norm = std::max(norm, std::fabs(double(va[i])));
    }
    EXPECT_LE(err, 1e-6 * norm) << a.name;
  }
  const double l1 = std::stod(f1.header().metadata.at("deltaedit.loss")),
               l2 = std::stod(f2.header().metadata.at("deltaedit.loss"));
  EXPECT_NEAR(l2, l1, 1e-6 * l1);

  const std::vector<std::string> approx = {"approx", "--base",     base,     "--post", post,
                                           "--op",   "dare:p=0.9", "--data", data,     "--limit",
                                           "8",      "--steps",    "3",      "--json"};
  BothRuns a;
  ASSERT_NO_FATAL_FAILURE(run_both(approx, a));
  const json &r1 = a.memory, &r2 = a.streamed;
  for (const char* k :
       {"approximation_term", "true_delta_loss", "loss_post", "loss_edit", "intensity"})
    EXPECT_NEAR(r2[k].get<double>(), r1[k].get<double>(), 1e-6 * std::fabs(r1[k].get<double>()))
        << k;
  ASSERT_EQ(r1["per_tensor"].size(), r2["per_tensor"].size());

  // --max-memory below the in-memory plan streams; --dry-run reports the plan and runs nothing.
  auto aargs = approx;
  aargs.insert(aargs.end(), {"--max-memory", "1MB"});
  auto a3 = run_cli(aargs);
  ASSERT_EQ(a3.status, 0) << a3.err;
  EXPECT_NEAR(json::parse(a3.out)["approximation_term"].get<double>(),
              r2["approximation_term"].get<double>(), 0.0);
  aargs.push_back("--dry-run");
  auto d = run_cli(aargs);
  ASSERT_EQ(d.status, 0) << d.err;
  auto p = json::parse(d.out);
  EXPECT_TRUE(p["streamed"].get<bool>());
  EXPECT_EQ(p["streams"], 4);  // nodes 0, 1/3, 2/3 and W_edit
  EXPECT_EQ(p["gradient_streams"], 3);
  EXPECT_LT(p["peak_bytes"].get<uint64_t>(), p["in_memory_bytes"].get<uint64_t>());
  aargs = approx;
  aargs.insert(aargs.end(), {"--streamed", "--loss", "dpo", "--ref", post});
  auto bad = run_cli(aargs);  // plain records for the DPO loss: the line is named
  EXPECT_EQ(bad.status, 1) << bad.err;
  EXPECT_NE(bad.err.find("line 1: the DPO loss needs"), std::string::npos) << bad.err;
}

// The DPO loss streamed from the command line: the shipped DPO stage against its SFT reference,
// the same term, loss and ΔL as in memory, and --progress reporting every unit once each way.
TEST(StreamedCli, DpoApproxAndEvalEqualTheInMemoryRun) {
  const fs::path z = fs::path(DELTAEDIT_SOURCE_DIR) / "models/zoo";
  const std::string sft = (z / "math-sft").string(), dpo = (z / "math-dpo").string(),
                    data = (z / "data/dpo_test.jsonl").string();
  const std::vector<std::string> approx = {"approx",     "--base", sft,  "--post",  dpo, "--op",
                                           "dare:p=0.9", "--data", data, "--limit", "6", "--loss",
                                           "dpo",        "--ref",  sft,  "--steps", "3", "--json"};
  BothRuns a;
  ASSERT_NO_FATAL_FAILURE(run_both(approx, a, {"--progress"}));
  const json &r1 = a.memory, &r2 = a.streamed;
  const std::string& progress = a.streamed_err;
  for (const char* k : {"approximation_term", "true_delta_loss", "loss_post", "loss_edit"})
    EXPECT_NEAR(r2[k].get<double>(), r1[k].get<double>(), 1e-6 * std::fabs(r1[k].get<double>()))
        << k;
  EXPECT_GT(std::fabs(r1["true_delta_loss"].get<double>()), 1e-6);
  // Progress: one line per unit, forward then backward, the last one counting them all.
  size_t lines = 0;
  for (size_t at = 0; (at = progress.find("approx: ", at)) != std::string::npos; ++at) ++lines;
  const size_t units =
      2 * json::parse(util::read_file(fs::path(dpo) / "config.json"))["num_hidden_layers"]
              .get<size_t>() +
      3;
  EXPECT_EQ(lines, units) << progress;
  EXPECT_NE(progress.find("backward unit " + std::to_string(units) + "/" + std::to_string(units) +
                          " done"),
            std::string::npos)
      << progress;

  const std::vector<std::string> eval = {"eval", "--model", dpo,   "--data", data, "--limit",
                                         "6",    "--loss",  "dpo", "--ref",  sft,  "--json"};
  BothRuns e;
  ASSERT_NO_FATAL_FAILURE(run_both(eval, e));
  const double l1 = e.memory["loss"].get<double>();
  EXPECT_NEAR(e.streamed["loss"].get<double>(), l1, 1e-6 * l1);
  EXPECT_NEAR(l1, r1["loss_post"].get<double>(), 1e-9 * l1);

  // Streamed DPO without a reference is a usage error.
  auto noref = eval;
  noref.push_back("--streamed");
  const auto ref_flag = std::find(noref.begin(), noref.end(), "--ref");
  ASSERT_NE(ref_flag, noref.end());
  noref.erase(ref_flag, ref_flag + 2);  // "--ref", sft
  auto bad = run_cli(noref);
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_NE(bad.err.find("--loss dpo needs --ref"), std::string::npos) << bad.err;
}

#endif
