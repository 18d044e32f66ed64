// Shared helpers of the subcommands: exit codes, progress lines, number formatting.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

#include <CLI/CLI.hpp>

namespace deltaedit::cli {

enum Exit : int { kOk = 0, kFail = 1, kUsage = 2, kInterrupted = 130 };

// Each subcommand registers itself on the app and returns the function that runs it.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

std::string human_bytes(uint64_t b);

// A progress line on stderr when it is a terminal (or when forced), with rate and ETA.
class ProgressLine {
 public:
  explicit ProgressLine(std::string label, bool enabled);
  void update(double done, double total, const std::string& unit_text = {});
  void finish();

 private:
  std::string label_;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_;
};
bool stderr_is_tty();

// Run `body` mapping deltaedit errors to messages and exit codes (Usage → 2, Interrupted → 130).
int guarded(const std::function<int()>& body);

Command add_inspect(CLI::App& app);
Command add_verify(CLI::App& app);
Command add_stats(CLI::App& app);
Command add_edit(CLI::App& app);
Command add_apply(CLI::App& app);
Command add_ops(CLI::App& app);
Command add_tokenize(CLI::App& app);
Command add_merge(CLI::App& app);
Command add_extract_lora(CLI::App& app);

}  // namespace deltaedit::cli
