// The report of the whole demo: the paper's experiments in two regimes (the family's light SFT
// and the retrain pair), EXPO on the family's DPO pair with the DPO loss, and M1 (merges of the two
// experts). From the results of each part it writes OUT/report/index.html:
//   - the regimes (‖Δ‖/‖W_base‖, base and post accuracy) and every claim's verdict side by side;
//   - DARE's tolerance (accuracy against the drop rate at k = 0) next to ‖Δ‖/‖W‖;
//   - how well the approximation term predicts ΔL in each regime, overall and by band of |ΔL|
//     (sign agreement, Pearson, Spearman), with the term plotted against ΔL on a symmetric-log
//     scale where the small edits can be seen;
//   - EXPO's α on the DPO pair; the merges: accuracy on both tasks, each task's term against its
//     true ΔL, and the tensors that contribute most.
// No libtorch: it only reads JSON. Missing parts are reported in the page, never an error.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace deltaedit::experiments {

// Bands of |ΔL| for the prediction-quality table: [0, 0.01), [0.01, 0.1), [0.1, ∞).
inline constexpr double kSmallDeltaLoss = 0.01, kLargeDeltaLoss = 0.1;

struct PredictionBand {
  std::string band;  // "all", "|ΔL| < 0.01", ...
  std::size_t n = 0;
  double sign_agreement = 0, pearson = 0, spearman = 0;
};
// The (term, ΔL) pairs of every point of a sweep's results, overall and per band.
std::vector<PredictionBand> prediction_bands(const nlohmann::json& sweep_results);

// input: {"regimes": [{"id", "name", "delta_over_weight", "results": <sweep results.json>}, ...],
//         "dpo": <sweep results.json of the DPO-loss sweep> | null,
//         "merge": <merge-results.json> | null}
std::string family_report_html(const nlohmann::json& input);
// Writes out/report/index.html (through a temporary file renamed into place).
void render_family_report(const nlohmann::json& input, const std::filesystem::path& out);

}  // namespace deltaedit::experiments
