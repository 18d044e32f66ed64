#include "experiments/sweep.h"
#include "report/sweep_report.h"

namespace deltaedit::experiments {

void render_report(const nlohmann::json& results, const std::filesystem::path& out) {
  report::render_sweep_report(results, out);
}

}  // namespace deltaedit::experiments
