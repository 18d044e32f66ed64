// Writing never leaves a half-written model and never harms an input (RELIABILITY.md).
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>

#include "engine_test_util.h"
#include "io/checkpoint.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {
// A pair big enough that an edit takes a noticeable time (8 × 4M f32 per side).
void make_big_pair(const fs::path& dir) {
  for (const char* side : {"base", "post"}) {
    fs::create_directories(dir / side);
    std::vector<SynthTensor> ts;
    for (int i = 0; i < 8; ++i)
      ts.push_back({"layer." + std::to_string(i) + ".weight", io::DType::F32, {2048, 2048},
                    random_values(2048 * 2048, uint32_t(i + (side[0] == 'p' ? 100 : 0)))});
    write_safetensors(dir / side / "model.safetensors", ts);
  }
}

// Whether process `pid` has installed handlers for SIGINT and SIGTERM (SigCgt in /proc).
bool handlers_installed(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("SigCgt:", 0) == 0) {
      const unsigned long long mask = std::stoull(line.substr(7), nullptr, 16);
      return (mask >> (SIGINT - 1) & 1) && (mask >> (SIGTERM - 1) & 1);
    }
  return false;
}

// Starts the CLI, sends `sig` `delay` after its signal handlers are in place (or at once for
// SIGKILL, which cannot be caught), returns (exit status, whether it was still running).
// A process that exited by itself reports its exit code; one killed by a signal 128 + signal + 1000.
std::pair<int, bool> run_and_signal(const std::vector<std::string>& args, int sig, std::chrono::milliseconds delay) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    std::string bin = DELTAEDIT_BINARY;
    argv.push_back(bin.data());
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  if (sig != SIGKILL)
    for (int i = 0; i < 2000 && !handlers_installed(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::this_thread::sleep_for(delay);
  int st = 0;
  bool running = ::waitpid(pid, &st, WNOHANG) == 0;
  if (running) {
    ::kill(pid, sig);
    ::waitpid(pid, &st, 0);
  }
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + 128 + WTERMSIG(st), running};
}
}  // namespace

TEST(Durability, RoundTripIsByteIdenticalAndVerifies) {
  TempDir t;
  for (const std::string src : {"llama/post", "qwen2/post_bf16_sharded", "mistral/base"}) {
    const fs::path out = t / (src.substr(0, src.find('/')) + "-copy");
    auto r = run_cli({"edit", "--base", fixture(src).string(), "--post", fixture(src).string(), "--op",
                      "scale:alpha=1,include=^$", "--out", out.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    auto a = io::Checkpoint::open(fixture(src));
    auto b = io::Checkpoint::open(out);
    ASSERT_EQ(a.names(), b.names());
    for (const auto& n : a.names()) {
      auto x = a.data(n), y = b.data(n);
      EXPECT_TRUE(x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size()) == 0) << n;
      EXPECT_EQ(a.info(n).dtype, b.info(n).dtype);
      EXPECT_EQ(a.info(n).shape, b.info(n).shape);
    }
    EXPECT_EQ(run_cli({"verify", out.string()}).status, 0);
  }
}

TEST(Durability, SigkillDuringWriteLeavesNothing) {
  TempDir t;
  make_big_pair(t.path);
  int killed_mid_write = 0;
  for (int ms : {30, 80, 150, 250, 400}) {
    const fs::path out = t / ("out" + std::to_string(ms));
    const std::vector<std::string> cmd{"edit", "--base", (t / "base").string(), "--post", (t / "post").string(),
                                       "--op", "dare:p=0.5", "--out", out.string()};
    auto [status, running] = run_and_signal(cmd, SIGKILL, std::chrono::milliseconds(ms));
    if (running) {
      EXPECT_EQ(status, 1000 + 128 + SIGKILL);
      // Never a partial output: none, a complete one, or a dead staging dir the next run removes.
      if (expect_sigkill_outcome(t.path, out, cmd)) ++killed_mid_write;
    } else {
      EXPECT_EQ(status, 0);
      EXPECT_EQ(run_cli({"verify", out.string()}).status, 0);
    }
    EXPECT_TRUE(leftovers(t.path).empty()) << ms;
  }
  EXPECT_GT(killed_mid_write, 0) << "no kill landed while the edit ran";
}

// The state a SIGKILL leaves when it lands in the commit window (a named staging directory of a
// dead process, half linked, no output): the next run for the same target removes it and writes
// the output; a live process's staging directory is left alone.
TEST(Durability, DeadStagingDirOfTheTargetIsRemovedByTheNextRun) {
  TempDir t;
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int st = 0;
  ::waitpid(child, &st, 0);  // `child` is a pid that no longer runs
  const std::string dead = ".out.deltaedit-staging-" + std::to_string(child) + "-0";
  const std::string live = ".out.deltaedit-staging-" + std::to_string(::getpid()) + "-0";
  for (const auto& d : {dead, live}) {
    fs::create_directories(t / d);
    std::ofstream(t / d / "model.safetensors") << "half";
  }
  const auto r = run_cli({"edit", "--base", fixture("llama/base").string(), "--post", fixture("llama/post").string(),
                          "--op", "scale:alpha=0.5", "--out", (t / "out").string()});
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_FALSE(fs::exists(t / dead));
  EXPECT_TRUE(fs::exists(t / live / "model.safetensors"));
  EXPECT_EQ(run_cli({"verify", (t / "out").string()}).status, 0);
}

TEST(Durability, SigintAndSigtermCleanUp) {
  TempDir t;
  make_big_pair(t.path);
  int caught = 0;
  for (int sig : {SIGINT, SIGTERM}) {
    for (int ms : {20, 80}) {  // well inside the run, which lasts a few hundred ms after start-up
      const fs::path out = t / ("o" + std::to_string(sig) + "-" + std::to_string(ms));
      auto [status, running] = run_and_signal({"edit", "--base", (t / "base").string(), "--post",
                                               (t / "post").string(), "--op", "bitdelta", "--out", out.string()},
                                              sig, std::chrono::milliseconds(ms));
      if (!running) continue;
      ++caught;
      EXPECT_EQ(status, 130) << "signal " << sig;  // exited through its handler, not killed
      EXPECT_FALSE(fs::exists(out));
      EXPECT_TRUE(leftovers(t.path).empty());
    }
  }
  EXPECT_GT(caught, 0);
}

TEST(Durability, FullDiskLeavesNothing) {
  TempDir t;
  // Limits above the size of the captured error text, below the output's size.
  for (rlim_t limit : {rlim_t(4096), rlim_t(50000), rlim_t(300000)}) {
    const fs::path out = t / ("o" + std::to_string(limit));
    auto r = run_cli({"edit", "--base", fixture("llama/base").string(), "--post", fixture("llama/post").string(),
                      "--op", "dare", "--out", out.string()},
                     limit);
    EXPECT_EQ(r.status, 1) << r.err;
    EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
    EXPECT_TRUE(leftovers(t.path).empty());
  }
  auto r = run_cli({"edit", "--base", fixture("llama/base").string(), "--post", fixture("llama/post").string(),
                    "--op", "bitdelta", "--pack", "--out", (t / "p").string()},
                   4096);
  EXPECT_EQ(r.status, 1);
  EXPECT_FALSE(fs::exists(t / "p"));
  EXPECT_TRUE(leftovers(t.path).empty());
}

TEST(Durability, RefusesToWriteOverAnInput) {
  TempDir t;
  fs::copy(fixture("llama/post"), t / "post");
  const std::string before = read_file(t / "post/model.safetensors");
  for (const fs::path& out : {t / "post", t / "post/model.safetensors"}) {
    auto r = run_cli({"edit", "--base", fixture("llama/base").string(), "--post", (t / "post").string(), "--op",
                      "dare", "--out", out.string()});
    EXPECT_EQ(r.status, 2) << r.err;
  }
  EXPECT_EQ(read_file(t / "post/model.safetensors"), before);
}

TEST(Cli, ExitCodesAndMessages) {
  TempDir t;
  std::ofstream(t / "bad.safetensors") << "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n";
  auto v = run_cli({"verify", (t / "bad.safetensors").string()});
  EXPECT_EQ(v.status, 1);
  EXPECT_NE(v.out.find("git-lfs"), std::string::npos) << v.out;
  EXPECT_EQ(run_cli({"verify"}).status, 2);
  EXPECT_EQ(run_cli({"verify", "--no-such-flag", "x"}).status, 2);
  EXPECT_EQ(run_cli({"verify", fixture("llama/post_bf16_sharded").string()}).status, 0);
  auto e = run_cli({"edit", "--base", "x", "--post", "y", "--op", "dare:p=2", "--out", (t / "o").string()});
  EXPECT_EQ(e.status, 2);
  EXPECT_NE(e.err.find("'dare'"), std::string::npos) << e.err;
  EXPECT_NE(e.err.find("[0, 1)"), std::string::npos) << e.err;
  for (const char* flag : {"--max-memory", "--max-shard-size"}) {
    auto z = run_cli({"edit", "--base", fixture("llama/base").string(), "--post", fixture("llama/post").string(), "--op",
                      "dare", "--out", (t / "o").string(), flag, "5XB"});
    EXPECT_EQ(z.status, 2) << flag;
    EXPECT_NE(z.err.find(flag), std::string::npos) << z.err;
    EXPECT_NE(z.err.find("5XB"), std::string::npos) << z.err;
    EXPECT_FALSE(fs::exists(t / "o"));
  }
  auto am = run_cli({"apply", "--base", fixture("llama/base").string(), "--pack", (t / "nopack").string(), "--out",
                     (t / "o").string(), "--max-memory", "lots"});
  EXPECT_EQ(am.status, 2);
  EXPECT_NE(am.err.find("--max-memory"), std::string::npos) << am.err;
  auto m = run_cli({"edit", "--base", (t / "missing").string(), "--post", "y", "--op", "dare", "--out", (t / "o").string()});
  EXPECT_EQ(m.status, 1);
  EXPECT_NE(m.err.find("missing"), std::string::npos);
  auto h = run_cli({"edit", "--help"});
  EXPECT_EQ(h.status, 0);
  EXPECT_NE(h.out.find("Examples"), std::string::npos);
  auto j = run_cli({"inspect", "--json", fixture("qwen2/post_bf16_sharded").string()});
  ASSERT_EQ(j.status, 0);
  auto doc = nlohmann::json::parse(j.out);
  EXPECT_EQ(doc["tensors"].size(), io::Checkpoint::open(fixture("qwen2/post_bf16_sharded")).names().size());
  EXPECT_TRUE(doc["tensors"][0].contains("file"));
  EXPECT_EQ(doc["config"]["tied"], true);
}

// An exact SVD (one LAPACK call of seconds) stops within a second of Ctrl-C: the call runs on its
// own thread while the run polls for the signal. Measured against the same edit left to finish.
TEST(Durability, CtrlCStopsAnExactSvdWithinASecond) {
  TempDir t;
  for (const char* side : {"base", "post"}) {
    fs::create_directories(t / side);
    write_safetensors(t / side / "model.safetensors",
                      {{"w", io::DType::F32, {2048, 2048},
                        random_values(2048 * 2048, side[0] == 'p' ? 7u : 3u)}});
  }
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"edit", "--base", (t / "base").string(), "--post", (t / "post").string(),
                                    "--op", "lowrank:rank=8,method=exact", "--out", (t / out).string()};
  };
  const auto t0 = std::chrono::steady_clock::now();
  auto full = run_cli(args("full"));
  const double whole = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(full.status, 0) << full.err;
  if (whole < 2.0) GTEST_SKIP() << "the SVD took only " << whole << " s here: too short to interrupt inside it";

  pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen("/dev/null", "w", stdout);
    std::freopen("/dev/null", "w", stderr);
    auto a = args("cut");
    std::vector<char*> argv;
    std::string bin = DELTAEDIT_BINARY;
    argv.push_back(bin.data());
    for (auto& s : a) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  // Half-way through the run: reading and setting up take a small part of it, the SVD the rest.
  std::this_thread::sleep_for(std::chrono::duration<double>(whole / 2));
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, WNOHANG), 0) << "finished before the signal";
  const auto k0 = std::chrono::steady_clock::now();
  ::kill(pid, SIGINT);
  ::waitpid(pid, &st, 0);
  const double stop = std::chrono::duration<double>(std::chrono::steady_clock::now() - k0).count();
  ASSERT_TRUE(WIFEXITED(st)) << "killed by signal " << WTERMSIG(st);
  EXPECT_EQ(WEXITSTATUS(st), 130);
  EXPECT_LT(stop, 1.0) << "the whole edit takes " << whole << " s";
  RecordProperty("stop_seconds", std::to_string(stop));
  EXPECT_FALSE(fs::exists(t / "cut"));
  EXPECT_TRUE(leftovers(t.path).empty());
}
