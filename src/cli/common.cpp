#include "cli/common.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "io/writer.h"
#include "util/error.h"

namespace deltaedit::cli {

std::string human_bytes(uint64_t b) {
  const char* u[] = {"B", "KB", "MB", "GB", "TB"};
  double v = double(b);
  int i = 0;
  while (v >= 1000 && i < 4) {
    v /= 1000;
    ++i;
  }
  return i == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, u[i]);
}

bool stderr_is_tty() { return ::isatty(2) == 1; }

ProgressLine::ProgressLine(std::string label, bool enabled)
    : label_(std::move(label)),
      enabled_(enabled),
      start_(std::chrono::steady_clock::now()),
      last_{} {}

void ProgressLine::update(double done, double total, const std::string& unit_text) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total && now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  double el = std::chrono::duration<double>(now - start_).count();
  double frac = total > 0 ? done / total : 1.0;
  std::string eta = frac > 0 && frac < 1 ? fmt::format(" ETA {:.0f}s", el * (1 - frac) / frac) : "";
  int width = 30, fill = int(frac * width + 0.5);
  std::fprintf(
      stderr, "\r%s [%s%s] %3.0f%% %s%s   ", label_.c_str(), std::string(size_t(fill), '#').c_str(),
      std::string(size_t(width - fill), ' ').c_str(), frac * 100, unit_text.c_str(), eta.c_str());
  std::fflush(stderr);
}

void ProgressLine::finish() {
  if (!enabled_) return;
  std::fprintf(stderr, "\n");
}

int guarded(const std::function<int()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    if (e.kind() == ErrorKind::Usage) return kUsage;
    if (e.kind() == ErrorKind::Interrupted) return kInterrupted;
    return kFail;
  } catch (const std::bad_alloc&) {
    std::cerr << "error: out of memory\n";
    return kFail;
  } catch (const std::filesystem::filesystem_error& e) {
    std::cerr << "error: " << e.what() << "\n";  // names the path(s)
    return kFail;
  } catch (const std::exception& e) {
    // Every reader wraps what it raises at its I/O boundary (util::at_boundary), naming the file;
    // anything else that reaches here is a bug of ours, and says so.
    std::cerr << "error: "
              << Error(ErrorKind::Internal, std::string("unhandled exception: ") + e.what()).what()
              << "\n";
    return kFail;
  }
}

}  // namespace deltaedit::cli
