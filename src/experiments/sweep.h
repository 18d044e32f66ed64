// The paper's experiments (SPEC §5) on any (base, post) pair: every grid point is an edit whose
// accuracy, loss, approximation term (C nodes, left rule) and true ΔL are measured; results go to
// results.json, one CSV per experiment and a self-contained report/index.html.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deltaedit::experiments {

struct SweepConfig {
  std::filesystem::path base, post;
  std::filesystem::path eval_data;  // prompt/response records for accuracy
  std::filesystem::path loss_data;  // records for loss, gradients and the approximation term
  // "causal" (token cross-entropy) or "dpo": loss_data holds {"prompt", "chosen", "rejected"}
  // pairs and the reference policy is `base` (the EXPO setting: base = the SFT model, post = its
  // DPO successor).
  std::string loss = "causal";
  double beta = 0.1;
  uint64_t seed = 1;
  size_t eval_examples = 200, loss_examples = 64, batch_size = 16;
  int64_t max_new_tokens = 48;
  int steps = 5;
  int threads = 2;
  nlohmann::json experiments;  // {"F1": {...grid...}, ...}; missing ids are skipped
  static SweepConfig from_json(const nlohmann::json& j, const std::filesystem::path& relative_to);
  nlohmann::json to_json() const;
};

// The built-in configuration of `deltaedit demo`: the shipped pair, a reduced grid.
nlohmann::json demo_config_json(const std::filesystem::path& zoo_dir);
// The full grid of SPEC §5 (documented example for real pairs).
nlohmann::json full_grid_json();

struct SweepPoint {
  std::string experiment, id, label;
  std::vector<std::string> ops;
  nlohmann::json params;  // grid coordinates, e.g. {"p": 0.5, "k": 0}
  bool accuracy = true;   // F3 measures the approximation term only
};
std::vector<SweepPoint> expand_points(const nlohmann::json& experiments);

using SweepProgress = std::function<void(size_t done, size_t total, const std::string& current)>;

// Runs (or resumes) the sweep into `out`; finished points are read back, not recomputed.
nlohmann::json run_sweep(const SweepConfig& cfg, const std::filesystem::path& out, const SweepProgress& progress = {});

}  // namespace deltaedit::experiments
