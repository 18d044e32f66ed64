// The model subcommands end to end: tokenize, eval, grad, approx (stable JSON keys and errors).
#include <gtest/gtest.h>

#include "../engine/engine_test_util.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "text/tokenizer.h"

using namespace deltaedit;
using namespace deltaedit::testing;
using nlohmann::json;

namespace {
const fs::path kZoo = fs::path(DELTAEDIT_SOURCE_DIR) / "models/zoo/retrain";
}

TEST(ModelCli, TokenizeMatchesTheLibrary) {
  TempDir t;
  std::ofstream(t / "in.txt") << "Tom has 12 apples.";
  // stdin from a file: run through the shell-free helper by redirecting in a child.
  pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen((t / "in.txt").c_str(), "r", stdin);
    std::freopen((t / "out.txt").c_str(), "w", stdout);
    std::string bin = DELTAEDIT_BINARY, a1 = "tokenize", a2 = (kZoo / "post").string(), a3 = "--special", a4 = "--json";
    char* argv[] = {bin.data(), a1.data(), a2.data(), a3.data(), a4.data(), nullptr};
    ::execv(bin.c_str(), argv);
    ::_exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  auto j = json::parse(read_file(t / "out.txt"));
  auto tok = text::Tokenizer::load(kZoo / "post");
  EXPECT_EQ(j["ids"].get<std::vector<int32_t>>(), tok.encode("Tom has 12 apples.", true));
  EXPECT_EQ(j["tokens"].size(), j["ids"].size());
}

#ifdef DELTAEDIT_HAVE_TORCH  // eval, grad, approx and zoo exist only in the libtorch build

// deltaedit never loads libtorch; it lists the model commands and hands them to deltaedit-torch.
TEST(ModelCli, ModelCommandsAreHandedToTheTorchExecutable) {
  const fs::path light = DELTAEDIT_BINARY, full = light.parent_path() / "deltaedit-torch";
  ASSERT_TRUE(fs::exists(full));
  // The dynamic section names the shared libraries an executable needs.
  EXPECT_EQ(read_file(light).find("libtorch"), std::string::npos);
  EXPECT_NE(read_file(full).find("libtorch"), std::string::npos);
  auto h = run_cli({"--help"});
  EXPECT_EQ(h.status, 0);
  for (const char* c : {"eval", "grad", "approx", "zoo", "sweep", "demo", "edit", "stats"})
    EXPECT_NE(h.out.find(std::string("  ") + c + " "), std::string::npos) << c;
  auto e = run_cli({"eval", "--help"});
  EXPECT_EQ(e.status, 0);
  EXPECT_NE(e.out.find("--model"), std::string::npos);
  auto bad = run_cli({"eval", "--model", "/nonexistent", "--data", "/nonexistent.jsonl"});
  EXPECT_EQ(bad.status, 1) << bad.err;  // the runtime's own error, through the hand-over
  EXPECT_NE(bad.err.find("/nonexistent"), std::string::npos) << bad.err;
}

TEST(ModelCli, EvalGradApproxJson) {
  TempDir t;
  const std::string data = (kZoo / "data/eval.jsonl").string();
  auto e = run_cli({"eval", "--model", (kZoo / "post").string(), "--data", data, "--limit", "20", "--metric",
                    "accuracy", "--threads", "1", "--json"});
  ASSERT_EQ(e.status, 0) << e.err;
  auto ej = json::parse(e.out);
  for (const char* k : {"loss", "tokens", "accuracy", "examples"}) EXPECT_TRUE(ej.contains(k)) << k;
  EXPECT_EQ(ej["examples"], 20);
  EXPECT_GE(ej["accuracy"].get<double>(), 0.8);
  EXPECT_LT(ej["loss"].get<double>(), 0.1);
  auto l = run_cli({"eval", "--model", (kZoo / "post").string(), "--data", data, "--limit", "20", "--json"});
  ASSERT_EQ(l.status, 0);
  EXPECT_TRUE(json::parse(l.out)["accuracy"].is_null());
  EXPECT_NEAR(json::parse(l.out)["loss"].get<double>(), ej["loss"].get<double>(), 1e-9);

  auto g = run_cli({"grad", "--model", (kZoo / "post").string(), "--data", data, "--limit", "16", "--threads", "1",
                    "--out", (t / "g.safetensors").string()});
  ASSERT_EQ(g.status, 0) << g.err;
  auto gf = io::SafetensorsFile::open(t / "g.safetensors");
  auto post = io::Checkpoint::open(kZoo / "post");
  EXPECT_EQ(gf.header().tensors.size(), post.names().size());
  for (const auto& ti : gf.header().tensors) {
    EXPECT_EQ(ti.dtype, io::DType::F32);
    EXPECT_EQ(ti.shape, post.info(ti.name).shape) << ti.name;
  }
  // The gradient file feeds biased:by=grad.
  auto b = run_cli({"edit", "--base", (kZoo / "base").string(), "--post", (kZoo / "post").string(), "--op",
                    "biased:by=grad,k=0.9", "--grad", (t / "g.safetensors").string(), "--out", (t / "biased").string()});
  EXPECT_EQ(b.status, 0) << b.err;

  auto a = run_cli({"approx", "--base", (kZoo / "base").string(), "--post", (kZoo / "post").string(), "--op",
                    "dare:p=0.5", "--data", data, "--limit", "16", "--steps", "2", "--threads", "1", "--fisher",
                    "--json"});
  ASSERT_EQ(a.status, 0) << a.err;
  auto aj = json::parse(a.out);
  for (const char* k : {"approximation_term", "true_delta_loss", "gap", "steps", "rule", "intensity", "fisher_term",
                        "per_tensor"})
    EXPECT_TRUE(aj.contains(k)) << k;
  EXPECT_EQ(aj["steps"], 2);
  EXPECT_EQ(aj["rule"], "left");
  EXPECT_TRUE(aj["fisher_term"].is_number());
  double s = 0;
  for (const auto& p : aj["per_tensor"]) s += p["contribution"].get<double>();
  EXPECT_NEAR(s, aj["approximation_term"].get<double>(), 1e-9 * std::fabs(s) + 1e-12);
  EXPECT_NEAR(aj["gap"].get<double>(), aj["true_delta_loss"].get<double>() - aj["approximation_term"].get<double>(),
              1e-12);
}

TEST(ModelCli, ErrorsNameTheProblem) {
  TempDir t;
  std::ofstream(t / "bad.jsonl") << "{\"text\": \"ok\"}\n{\"prompt\": 3, \"response\": \"x\"}\n";
  auto r = run_cli({"eval", "--model", (kZoo / "post").string(), "--data", (t / "bad.jsonl").string()});
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  auto d = run_cli({"eval", "--model", (kZoo / "post").string(), "--data", (kZoo / "data/eval.jsonl").string(),
                    "--loss", "dpo"});
  EXPECT_EQ(d.status, 2);
  EXPECT_NE(d.err.find("--ref"), std::string::npos) << d.err;
  auto u = run_cli({"eval", "--model", fixture("llama/post").string(), "--data", (t / "bad.jsonl").string()});
  EXPECT_EQ(u.status, 1);  // text records need a tokenizer; the fixture model has none
  EXPECT_NE(u.err.find("tokenizer"), std::string::npos) << u.err;
  fs::create_directories(t / "exists");  // (never the shipped pair: the family recipe resumes into its --out)
  auto c = run_cli({"zoo", "--recipe", "retrain", "--out", (t / "exists").string()});
  EXPECT_EQ(c.status, 2);  // never over an existing directory
  EXPECT_EQ(run_cli({"sweep"}).status, 2);
  auto s = run_cli({"sweep", (t / "missing.json").string(), "--out", (t / "s").string()});
  EXPECT_EQ(s.status, 1);
  EXPECT_NE(s.err.find("missing.json"), std::string::npos) << s.err;
  std::ofstream(t / "bad.json") << "{\"base\": \"b\", \"post\": \"p\", \"eval_data\": \"e\", \"experiments\": {\"F9\": {}}}";
  auto b = run_cli({"sweep", (t / "bad.json").string(), "--out", (t / "s").string()});
  EXPECT_EQ(b.status, 2);
  EXPECT_NE(b.err.find("F9"), std::string::npos) << b.err;
  // merge-sweep: a missing config names the file (exit 1); an unknown method in its grid, or a
  // single expert, is a usage error naming what is wrong (exit 2), before any model is loaded.
  auto ms = run_cli({"merge-sweep", (t / "missing.json").string(), "--out", (t / "m").string()});
  EXPECT_EQ(ms.status, 1);
  EXPECT_NE(ms.err.find("missing.json"), std::string::npos) << ms.err;
  const std::string expert = "{\"name\": \"a\", \"model\": \"x\", \"eval_data\": \"e\", \"loss_data\": \"l\"}";
  std::ofstream(t / "m1.json") << "{\"base\": \"b\", \"experts\": [" << expert << ", "
                               << "{\"name\": \"b\", \"model\": \"y\", \"eval_data\": \"e\", \"loss_data\": \"l\"}"
                               << "], \"grid\": {\"dare-ties\": {}}}";
  auto mm = run_cli({"merge-sweep", (t / "m1.json").string(), "--out", (t / "m").string()});
  EXPECT_EQ(mm.status, 2);
  EXPECT_NE(mm.err.find("dare-ties"), std::string::npos) << mm.err;
  std::ofstream(t / "m2.json") << "{\"base\": \"b\", \"experts\": [" << expert << "]}";
  auto me = run_cli({"merge-sweep", (t / "m2.json").string(), "--out", (t / "m").string()});
  EXPECT_EQ(me.status, 2);
  EXPECT_NE(me.err.find("exactly two experts"), std::string::npos) << me.err;
  EXPECT_FALSE(fs::exists(t / "m"));  // nothing written for a refused configuration
  auto k = run_cli({"tokenize", (t / "nothing").string()});
  EXPECT_EQ(k.status, 1);
  EXPECT_NE(k.err.find("nothing"), std::string::npos) << k.err;
}

#endif  // DELTAEDIT_HAVE_TORCH
