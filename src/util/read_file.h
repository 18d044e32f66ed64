// Whole-file reads for the small text files of a checkpoint (index, config, JSON sidecars).
#pragma once
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "util/error.h"

namespace deltaedit::util {

// The file's bytes; Error(Io) naming the file when it cannot be opened or read.
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open", p.string());
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(ErrorKind::Io, "read failed", p.string());
  return s;
}

}  // namespace deltaedit::util
