// Helpers shared by the report tests: temp dirs, files, tag attributes and a headless Chromium.
#pragma once
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace deltaedit::report::testing {

constexpr const char* kChromium = "/usr/bin/chromium";

inline std::filesystem::path make_temp_dir(const std::string& tag) {
  std::string pattern = (std::filesystem::temp_directory_path() / ("deltaedit-" + tag + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) return {};
  return pattern;
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline std::size_t count(const std::string& s, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = s.find(needle); p != std::string::npos; p = s.find(needle, p + needle.size())) ++n;
  return n;
}

// Attributes of the start tag beginning at `at` (name="value" or name='value').
inline std::map<std::string, std::string> tag_attributes(const std::string& doc, std::size_t at) {
  std::map<std::string, std::string> attrs;
  std::size_t i = doc.find_first_of(" \t\n>", at);
  while (i < doc.size() && doc[i] != '>') {
    while (i < doc.size() && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '/')) ++i;
    if (i >= doc.size() || doc[i] == '>') break;
    const std::size_t name_end = doc.find_first_of("= \t\n>", i);
    const std::string name = doc.substr(i, name_end - i);
    i = name_end;
    if (i < doc.size() && doc[i] == '=') {
      const char quote = doc[i + 1];
      const std::size_t end = doc.find(quote, i + 2);
      attrs[name] = doc.substr(i + 2, end - i - 2);
      i = end + 1;
    } else {
      attrs[name] = "";
    }
  }
  return attrs;
}

inline int run(const std::string& cmd) {
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Headless Chromium with no network chatter and a fresh profile, under a 60 s timeout.
inline std::string chromium_command(const std::filesystem::path& profile, const std::string& extra,
                                    const std::filesystem::path& page) {
  return std::string("timeout 60 ") + kChromium +
         " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
         " --disable-component-update --disable-sync --disable-dev-shm-usage --hide-scrollbars"
         " --user-data-dir='" + profile.string() + "' " + extra + " 'file://" + page.string() + "'";
}

}  // namespace deltaedit::report::testing
