// io::replace_file: the single-file form of the write protocol (reports, CSVs, zoo data files).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include "../engine/engine_test_util.h"
#include "io/writer.h"
#include "report/csv.h"
#include "util/error.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

std::vector<std::string> names(const fs::path& dir) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) v.push_back(e.path().filename().string());
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST(ReplaceFile, CreatesThenReplacesLeavingOnlyTheFile) {
  TempDir t;
  EXPECT_THROW(io::replace_file(t / "sub/report.html", "first"), Error);  // no directory is made
  fs::create_directories(t / "sub");
  io::replace_file(t / "sub/report.html", "first");
  EXPECT_EQ(read_file(t / "sub/report.html"), "first");
  struct stat before {};
  ASSERT_EQ(::stat((t / "sub/report.html").c_str(), &before), 0);
  io::replace_file(t / "sub/report.html", std::string(100000, 'x'));
  EXPECT_EQ(read_file(t / "sub/report.html"), std::string(100000, 'x'));
  struct stat after {};
  ASSERT_EQ(::stat((t / "sub/report.html").c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino) << "written in place, not renamed onto the old file";
  EXPECT_EQ(names(t / "sub"), std::vector<std::string>{"report.html"});
  io::replace_file(t / "empty", "");
  EXPECT_TRUE(fs::exists(t / "empty"));
  EXPECT_EQ(fs::file_size(t / "empty"), 0u);
}

TEST(ReplaceFile, AStagingFileOfADeadProcessIsRemoved) {
  TempDir t;
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  int st = 0;
  ::waitpid(child, &st, 0);  // `child` is a pid that no longer runs
  const std::string stale = ".r.csv.deltaedit-staging-" + std::to_string(child) + "-0";
  std::ofstream(t / stale) << "half";
  const std::string live = ".r.csv.deltaedit-staging-" + std::to_string(::getpid()) + "-7";
  std::ofstream(t / live) << "mine";  // a live process's staging file is left alone
  io::replace_file(t / "r.csv", "a,b\r\n");
  EXPECT_EQ(names(t.path), (std::vector<std::string>{live, "r.csv"}));
}

TEST(ReplaceFile, FailureKeepsTheOldFileAndNamesThePath) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes into read-only directories";
  TempDir t;
  fs::create_directories(t / "ro");
  io::replace_file(t / "ro/x.json", "old");
  fs::permissions(t / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  try {
    io::replace_file(t / "ro/x.json", "new");
    ADD_FAILURE() << "wrote into a read-only directory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Io);
    EXPECT_NE(std::string(e.what()).find((t / "ro").string()), std::string::npos) << e.what();
  }
  fs::permissions(t / "ro", fs::perms::owner_all);
  EXPECT_EQ(read_file(t / "ro/x.json"), "old");
  EXPECT_EQ(names(t / "ro"), std::vector<std::string>{"x.json"});
}

TEST(ReplaceFile, ANotADirectoryParentIsAnIoErrorNamingIt) {
  TempDir t;
  std::ofstream(t / "file") << "x";
  try {
    io::replace_file(t / "file/out.csv", "a");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Io);
    EXPECT_NE(std::string(e.what()).find((t / "file").string()), std::string::npos) << e.what();
  }
}

// After SIGINT the write stops before the rename: the old version stays and nothing is left over.
TEST(ReplaceFile, InterruptedWriteKeepsTheOldFile) {
  TempDir t;
  io::replace_file(t / "results.json", "old");
  pid_t child = ::fork();
  if (child == 0) {
    io::install_signal_handlers();
    ::raise(SIGINT);
    try {
      io::replace_file(t / "results.json", "new");
    } catch (const Error& e) {
      ::_exit(e.kind() == ErrorKind::Interrupted ? 0 : 3);
    }
    ::_exit(4);
  }
  int st = 0;
  ::waitpid(child, &st, 0);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
  EXPECT_EQ(read_file(t / "results.json"), "old");
  EXPECT_EQ(names(t.path), std::vector<std::string>{"results.json"});
}

// The CSV writer goes through it: an existing CSV is replaced whole.
TEST(ReplaceFile, CsvReportsUseIt) {
  TempDir t;
  std::ofstream(t / "r.csv") << std::string(5000, 'z');
  report::write_csv(t / "r.csv", {"a", "b"}, {});
  EXPECT_EQ(read_file(t / "r.csv"), "a,b\r\n");
  EXPECT_EQ(names(t.path), std::vector<std::string>{"r.csv"});
}
