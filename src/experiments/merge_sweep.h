// M1, merging measured with the paper's analysis: two experts fine-tuned from one base are merged
// by each method of a grid (MERGE.md's dialect, run by `deltaedit merge`'s own engine), and every
// merged model is measured on both tasks: accuracy, and for each task i the approximation term of
// D_i = W_merge − W_i on that task's loss data — the Riemann sum of ⟨∇L_i, D_i⟩ along
// W_i → W_merge — against the true ΔL_i = L_i(W_merge) − L_i(W_i), with per-tensor attribution.
// Results go to OUT/merge-results.json (one file per point under OUT/merge-points, so an
// interrupted run resumes); the merged checkpoints are removed once measured.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deltaedit::experiments {

struct MergeExpert {
  std::string name;               // e.g. "math"
  std::filesystem::path model;    // its checkpoint directory
  std::filesystem::path eval_data;  // prompt/response records (accuracy)
  std::filesystem::path loss_data;  // records for its loss and the approximation term
};

struct MergeSweepConfig {
  std::filesystem::path base;
  std::vector<MergeExpert> experts;  // exactly two
  uint64_t seed = 1;
  size_t eval_examples = 100, loss_examples = 32, batch_size = 16;
  int64_t max_new_tokens = 40;
  int steps = 5;
  int threads = 1;
  // {"task_arithmetic": {"lambda": [...]}, "ties": {"density": [...]}, "dare_ties": {"drop": [...]},
  //  "della": {"density": [...]}, "model_stock": {}, "slerp": {"t": [...]}}; missing methods skipped.
  nlohmann::json grid;
  static MergeSweepConfig from_json(const nlohmann::json& j, const std::filesystem::path& relative_to);
  nlohmann::json to_json() const;
};

// The family's built-in M1 grid: FAMILY/base with FAMILY/math-sft and FAMILY/order-sft.
nlohmann::json merge_demo_config_json(const std::filesystem::path& family);

struct MergePoint {
  std::string id, method, label;
  nlohmann::json params;
  std::string yaml;  // the merge configuration run for this point
};
// The points of `grid`, each with its YAML (models given as absolute or config-relative paths).
std::vector<MergePoint> merge_points(const MergeSweepConfig& cfg);

// ‖W_post − W_base‖ / ‖W_base‖ over the tensors both hold with the same shape, in f64.
double delta_over_weight(const std::filesystem::path& base, const std::filesystem::path& post);

using MergeSweepProgress = std::function<void(size_t done, size_t total, const std::string& current)>;
nlohmann::json run_merge_sweep(const MergeSweepConfig& cfg, const std::filesystem::path& out,
                               const MergeSweepProgress& progress = {});

}  // namespace deltaedit::experiments
