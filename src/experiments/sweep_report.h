// The report of a sweep over the paper's experiments (SPEC §5): from the
// results.json of `deltaedit sweep` it writes a self-contained report/index.html
// (summary, claims vs measured, one section per experiment with charts and
// tables, how well the approximation term predicts ΔL, configuration) and one
// CSV per experiment. No libtorch: it only reads the JSON.
//
// Missing experiments, empty point lists, null accuracies and non-finite
// numbers are reported in the page, never an error.
#pragma once

#include <array>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "report/html.h"

namespace deltaedit::experiments {

using namespace deltaedit::report;

// The experiments that get a section and a CSV, in report order.
inline constexpr std::array<const char*, 6> kSweepExperiments = {"F1", "T1", "F3", "F4", "F5", "F6"};

// Thresholds of the automatic verdicts. Accuracies are fractions in [0, 1].
struct VerdictRules {
  // "Near post": |accuracy − post accuracy| <= 0.05 (5 accuracy points).
  static constexpr double near_post = 0.05;
  // "Destroyed": accuracy <= half the post accuracy and more than `near_post` below it.
  static constexpr double destroyed_fraction = 0.5;
  // "≈ 0": |approximation term| < 10% of the median |term| of the decreased-class
  // methods of F3 (drop, magnitude, bitdelta, lowrank).
  static constexpr double near_zero_fraction = 0.10;
  // Sign of the term vs sign of ΔL: holds when sign agreement >= 0.9 and Spearman
  // >= 0.8; partly when sign agreement >= 0.7 or Spearman >= 0.5.
  static constexpr double sign_strong = 0.9, spearman_strong = 0.8;
  static constexpr double sign_weak = 0.7, spearman_weak = 0.5;
  // Fewer usable (term, ΔL) pairs than this make the agreement claim inconclusive.
  static constexpr std::size_t min_pairs = 3;
};

// The "claims vs measured" rows for `results` (the eight claims of the paper,
// in order), each with a verdict derived from the data by VerdictRules.
std::vector<Claim> sweep_claims(const nlohmann::json& results);

// The whole report as HTML (what render_sweep_report writes to index.html).
std::string sweep_report_html(const nlohmann::json& results);

// Writes out/report/index.html and out/<ID>.csv for each experiment of
// kSweepExperiments present in results["experiments"] (header only when its list
// is empty); nothing else. Columns: id, label, ops, each parameter, accuracy,
// loss, loss_post, approximation_term, true_delta_loss, gap, intensity, seconds.
// Throws std::runtime_error when a file cannot be written.
void render_sweep_report(const nlohmann::json& results, const std::filesystem::path& out);

}  // namespace deltaedit::experiments
