// Every size option of every command: a malformed or out-of-range size exits 2 naming the flag,
// before any file is read (the checkpoints named here do not exist).
#include <gtest/gtest.h>

#include "../engine/engine_test_util.h"

using namespace deltaedit::testing;

namespace {

struct SizeOption {
  std::vector<std::string> args;  // the command, with the option last
};

}  // namespace

TEST(SizeOptions, BadSizesAreUsageErrorsNamingTheFlag) {
  TempDir t;
  const std::string none = (t / "none").string(), out = (t / "out").string();
  std::ofstream(t / "merge.yaml") << "merge_method: linear\nmodels:\n  - model: " << none << "\n";
  const std::vector<std::vector<std::string>> commands{
      {"edit", "--base", none, "--post", none, "--op", "dare:p=0.5", "--out", out, "--max-memory"},
      {"edit", "--base", none, "--post", none, "--op", "dare:p=0.5", "--out", out, "--max-shard-size"},
      {"apply", "--base", none, "--pack", none, "--out", out, "--max-memory"},
      {"extract-lora", "--base", none, "--post", none, "--rank", "2", "--out", out, "--max-memory"},
      {"merge", (t / "merge.yaml").string(), "--out", out, "--max-memory"},
      {"merge", (t / "merge.yaml").string(), "--out", out, "--max-shard-size"},
  };
  for (const auto& cmd : commands) {
    const std::string flag = cmd.back();
    for (const std::string bad : {".", "1.2.3GB", "-1GB", "18446744073709551616", "18446744073709551616B",
                                  "20000000000GB", "5XB"}) {
      auto args = cmd;
      args.push_back(bad);
      auto r = run_cli(args);
      EXPECT_EQ(r.status, 2) << cmd[0] << " " << flag << " " << bad << ": " << r.err;
      EXPECT_NE(r.err.find(flag + ": '" + bad + "'"), std::string::npos)
          << cmd[0] << " " << flag << " " << bad << ": " << r.err;
      EXPECT_EQ(r.err.find("stod"), std::string::npos) << r.err;
    }
  }
  EXPECT_FALSE(fs::exists(out));
}
