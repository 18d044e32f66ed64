// Resumable runs (the sweep, the merge sweep): a run folder holds one configuration, and every
// finished piece is a JSON file that a rerun reads back instead of computing again. Each file is
// written whole or not at all (io::replace_file), so an interrupted run resumes where it stopped.
#pragma once
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/writer.h"
#include "util/error.h"
#include "util/read_file.h"

namespace deltaedit::experiments {

// Writes `config` to `file`, or checks that the folder's earlier run had the same one; `what`
// names the run in the error ("sweep", "merge sweep").
inline void claim_run_folder(const std::filesystem::path& file, const nlohmann::json& config,
                             const std::filesystem::path& out, const std::string& what) {
  if (!std::filesystem::exists(file)) {
    io::replace_file(file, config.dump(2) + "\n");
    return;
  }
  if (io::parse_json_strict(util::read_file(file), file.string()) != config)
    throw Error(ErrorKind::Usage, "this output holds a different " + what + "; choose a new --out or remove it",
                out.string());
}

// The JSON in `file` when it is there; otherwise compute(), written to `file` (indented by
// `indent`) before it is returned.
inline nlohmann::json cached_json(const std::filesystem::path& file, const std::function<nlohmann::json()>& compute,
                                  int indent = 2) {
  if (std::filesystem::exists(file)) return io::parse_json_strict(util::read_file(file), file.string());
  nlohmann::json j = compute();
  io::replace_file(file, j.dump(indent) + "\n");
  return j;
}

}  // namespace deltaedit::experiments
