// Helpers for engine tests: temp dirs, synthetic checkpoints, running the CLI.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "io/convert.h"
#include "io/writer.h"

namespace fs = std::filesystem;

namespace deltaedit::testing {

inline fs::path fixture(const std::string& rel) { return fs::path(DELTAEDIT_TEST_DATA) / "hf-reference" / rel; }

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "deltaedit-test-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path operator/(const std::string& s) const { return path / s; }
};

struct SynthTensor {
  std::string name;
  io::DType dtype;
  std::vector<int64_t> shape;
  std::vector<float> values;  // encoded into dtype (compute dtypes) or raw bytes for others
};

inline std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Writes a single safetensors file with the project's writer.
inline void write_safetensors(const fs::path& path, const std::vector<SynthTensor>& ts,
                              const std::map<std::string, std::string>& md = {}) {
  io::Staging st(path, {}, 0);
  std::vector<io::PlannedTensor> plan;
  for (const auto& t : ts) plan.push_back({t.name, t.dtype, t.shape});
  io::SafetensorsWriter w(st.create("file"), path.string(), plan, md);
  for (const auto& t : ts) {
    const uint64_t nbytes = io::PlannedTensor{t.name, t.dtype, t.shape}.nbytes();
    std::vector<std::byte> b(nbytes);
    if (io::is_compute_dtype(t.dtype))
      io::from_f32(t.values, t.dtype, b);
    else
      for (size_t i = 0; i < b.size(); ++i) b[i] = std::byte(i * 7 + 1);
    w.write(t.name, b);
  }
  w.finish();
  st.commit_file("file");
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Every file of two directories is byte-identical (and both hold the same names).
inline void expect_same_dirs(const fs::path& a, const fs::path& b) {
  std::vector<std::string> na, nb;
  for (const auto& e : fs::directory_iterator(a)) na.push_back(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(b)) nb.push_back(e.path().filename().string());
  std::sort(na.begin(), na.end());
  std::sort(nb.begin(), nb.end());
  ASSERT_EQ(na, nb);
  for (const auto& n : na) EXPECT_TRUE(read_file(a / n) == read_file(b / n)) << "differs: " << n;
}

struct RunResult {
  int status = -1;  // exit code, or 128+signal
  std::string out, err;
};

// Runs the CLI with an optional file-size limit; captures stdout/stderr via temp files.
inline RunResult run_cli(const std::vector<std::string>& args, rlim_t fsize_limit = RLIM_INFINITY) {
  TempDir t;
  const fs::path o = t / "out", e = t / "err";
  // Flushed first: the child's freopen would otherwise write the parent's pending output to the
  // parent's stdout under the child's file-size limit (killed by SIGXFSZ when that is a file).
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    if (fsize_limit != RLIM_INFINITY) {
      struct rlimit rl {fsize_limit, fsize_limit};
      ::setrlimit(RLIMIT_FSIZE, &rl);
    }
    FILE* fo = std::freopen(o.c_str(), "w", stdout);
    FILE* fe = std::freopen(e.c_str(), "w", stderr);
    (void)fo;
    (void)fe;
    std::vector<char*> argv;
    std::string bin = DELTAEDIT_BINARY;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  RunResult r;
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_file(o);
  r.err = read_file(e);
  return r;
}

// Names in `dir` that look like leftovers of an interrupted write.
inline std::vector<std::string> leftovers(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.find("deltaedit-staging") != std::string::npos || n.find("deltaedit-scratch") != std::string::npos)
      v.push_back(n);
  }
  return v;
}

// What a SIGKILL (which no handler sees) may leave of a run writing `out` in `dir`, by the
// protocol of io::Staging: nothing; a complete, valid output (the kill landed after the rename);
// or, when it landed in the commit window (the staging directory's mkdir, links and fsync before
// the rename, a few milliseconds), a staging directory of the dead process and no output, which
// the next run for the same target removes. `rerun` runs the command again into `out`. Returns
// true when the kill left no output (it landed while the run was working).
inline bool expect_sigkill_outcome(const fs::path& dir, const fs::path& out,
                                   const std::vector<std::string>& rerun) {
  if (fs::exists(out)) {
    EXPECT_TRUE(leftovers(dir).empty()) << out;
    EXPECT_EQ(run_cli({"verify", out.string()}).status, 0) << out;
    return false;
  }
  if (!leftovers(dir).empty()) {
    const auto r = run_cli(rerun);
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(leftovers(dir).empty()) << "the next run for " << out << " kept a dead staging dir";
    EXPECT_EQ(run_cli({"verify", out.string()}).status, 0) << out;
    fs::remove_all(out);
  }
  return true;
}

}  // namespace deltaedit::testing
