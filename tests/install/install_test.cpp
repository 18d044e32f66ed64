// `cmake --install` into a temporary prefix; the installed programs then run from an unrelated
// directory with the source and build trees hidden (an empty tmpfs mounted over them in a private
// mount namespace), so nothing may be found through a path of the build machine.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "../engine/engine_test_util.h"

using namespace deltaedit::testing;

namespace {

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

struct Shell {
  int status;
  std::string out;
};

Shell sh(const std::string& cmd) {
  TempDir t;
  const std::string full = "(" + cmd + ") >" + (t / "out").string() + " 2>&1";
  const int st = std::system(full.c_str());
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128, read_file(t / "out")};
}

// Runs `cmd` in `cwd` with the source tree (which holds the build tree) hidden.
Shell hidden_run(const fs::path& cwd, const std::string& cmd) {
  const std::string inner = "mount -t tmpfs none " + quote(DELTAEDIT_SOURCE_DIR) + " && mount -t tmpfs none " +
                            quote(DELTAEDIT_BUILD_DIR) + " 2>/dev/null; test ! -e " +
                            quote(std::string(DELTAEDIT_SOURCE_DIR) + "/CMakeLists.txt") + " && cd " +
                            quote(cwd.string()) + " && " + cmd;
  return sh(std::string(::geteuid() == 0 ? "unshare -m" : "unshare -rm") + " sh -c " + quote(inner));
}

}  // namespace

TEST(Install, InstalledProgramsRunWithoutTheBuildTree) {
  if (sh(std::string(::geteuid() == 0 ? "unshare -m" : "unshare -rm") + " true").status != 0)
    GTEST_SKIP() << "cannot hide the build tree: this system forbids private mount namespaces (unshare -m)";
  TempDir t;
  const fs::path prefix = t / "prefix", work = t / "elsewhere";
  fs::create_directories(work);
  auto inst = sh(quote(DELTAEDIT_CMAKE) + " --install " + quote(DELTAEDIT_BUILD_DIR) + " --prefix " +
                 quote(prefix.string()));
  ASSERT_EQ(inst.status, 0) << inst.out;
  ASSERT_TRUE(fs::exists(prefix / "bin/deltaedit"));
  const fs::path zoo = prefix / "share/deltaedit/zoo";
  for (const char* f : {"base/model.safetensors", "math-sft/model.safetensors", "math-sft/tokenizer.json", "data/eval.jsonl",
                        "retrain/post/model.safetensors", "retrain/data/eval.jsonl"})
    EXPECT_TRUE(fs::exists(zoo / f)) << f;

  // The hiding works: the test's own fixtures are gone inside the namespace.
  auto probe = hidden_run(work, "test ! -e " + quote(DELTAEDIT_TEST_DATA));
  ASSERT_EQ(probe.status, 0) << probe.out;

  const std::string bin = quote((prefix / "bin/deltaedit").string());
  auto v = hidden_run(work, bin + " --version");
  EXPECT_EQ(v.status, 0) << v.out;
  EXPECT_NE(v.out.find("deltaedit "), std::string::npos) << v.out;
  auto ins = hidden_run(work, bin + " verify " + quote((zoo / "math-sft").string()));
  EXPECT_EQ(ins.status, 0) << ins.out;

#ifdef DELTAEDIT_HAVE_TORCH
  ASSERT_TRUE(fs::exists(prefix / "bin/deltaedit-torch"));
  auto ev = hidden_run(work, bin + " eval --model " + quote((zoo / "math-sft").string()) + " --data " +
                                 quote((zoo / "data/eval.jsonl").string()) + " --metric accuracy --limit 8");
  EXPECT_EQ(ev.status, 0) << ev.out;
  EXPECT_NE(ev.out.find("accuracy"), std::string::npos) << ev.out;
  // demo without --zoo finds the installed family beside the binary. The whole sweep takes many
  // minutes: it must start (write its configuration, measure the models) and stop on Ctrl-C.
  auto demo = hidden_run(work, "timeout --preserve-status -s INT 25 " + bin + " demo --out out/demo");
  EXPECT_TRUE(demo.status == 0 || demo.status == 130) << demo.out;
  ASSERT_TRUE(fs::exists(work / "out/demo/family/sweep-config.json")) << demo.out;
  const std::string cfg = read_file(work / "out/demo/family/sweep-config.json");
  EXPECT_NE(cfg.find((zoo / "base").string()), std::string::npos) << cfg;
  EXPECT_EQ(cfg.find(DELTAEDIT_SOURCE_DIR), std::string::npos) << cfg;
#else
  // (`eval --help` would print the main help: CLI11 answers --help before the unknown word.)
  auto ev = hidden_run(work, bin + " eval --model " + quote((zoo / "math-sft").string()));
  EXPECT_NE(ev.status, 0) << "a build without libtorch has no model runtime";
#endif
}
