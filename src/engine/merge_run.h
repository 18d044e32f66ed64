// Running a merge plan (src/merge/plan.h): the per-tensor jobs handed to the executor (src/engine/executor.h) and the
// output of MERGE.md §4.2 — shards, index, config.json and tokenizer files from the donor,
// deltaedit.json (provenance) and a model card README.md.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "merge/plan.h"

namespace deltaedit::engine {

inline constexpr uint64_t kDefaultShardSize = 5'000'000'000;  // bytes, as mergekit's "5B"

struct RunOptions {
  std::filesystem::path out;
  std::filesystem::path config_path;  // never written over
  unsigned threads = 2;
  uint64_t max_memory = 768'000'000;
  uint64_t max_shard_size = kDefaultShardSize;
  std::function<void(size_t done, size_t total, uint64_t bytes)> progress;
};

struct RunResult {
  std::vector<std::string> files;
  std::vector<std::string> warnings;  // plan warnings and the methods' own
  uint64_t output_bytes = 0, nonfinite = 0, peak_buffer_bytes = 0;
  size_t tensors = 0, streamed = 0;
  nlohmann::json to_json() const;
};

// The provenance document written as deltaedit.json (also used by tests).
nlohmann::json provenance(const merge::MergePlan& plan, const std::vector<std::string>& warnings);

RunResult run_merge(const merge::MergePlan& plan, const RunOptions& opt);

}  // namespace deltaedit::engine
