#include "experiments/family_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include <fmt/format.h>

#include "experiments/sweep_report.h"
#include "report/correlation.h"
#include "report/html.h"
#include "report/svg.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::experiments {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double number(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j.at(key).is_number()) return kNaN;
  return j.at(key).get<double>();
}

// Every point of every experiment of a sweep's results.
std::vector<const json*> all_points(const json& results) {
  std::vector<const json*> pts;
  if (!results.is_object() || !results.contains("experiments")) return pts;
  for (const auto& [id, list] : results.at("experiments").items())
    if (list.is_array())
      for (const auto& p : list) pts.push_back(&p);
  return pts;
}

std::string pct(double v) { return std::isfinite(v) ? fmt::format("{:.1f} %", 100 * v) : "–"; }

Cell real(double v) { return std::isfinite(v) ? Cell(v) : Cell(std::string("–")); }

}  // namespace

std::vector<PredictionBand> prediction_bands(const json& results) {
  struct Acc {
    std::vector<double> term, dl;
  };
  std::vector<std::pair<std::string, Acc>> bands = {{"all", {}},
                                                    {fmt::format("|ΔL| < {}", kSmallDeltaLoss), {}},
                                                    {fmt::format("{} ≤ |ΔL| < {}", kSmallDeltaLoss, kLargeDeltaLoss), {}},
                                                    {fmt::format("|ΔL| ≥ {}", kLargeDeltaLoss), {}}};
  for (const json* p : all_points(results)) {
    const double t = number(*p, "approximation_term"), d = number(*p, "true_delta_loss");
    if (!std::isfinite(t) || !std::isfinite(d)) continue;
    const size_t b = std::abs(d) < kSmallDeltaLoss ? 1 : std::abs(d) < kLargeDeltaLoss ? 2 : 3;
    for (size_t k : {size_t(0), b}) {
      bands[k].second.term.push_back(t);
      bands[k].second.dl.push_back(d);
    }
  }
  std::vector<PredictionBand> out;
  for (const auto& [name, a] : bands) {
    PredictionBand pb;
    pb.band = name;
    pb.n = a.term.size();
    if (pb.n > 0) {
      const auto ag = report::agreement(a.term, a.dl);
      pb.sign_agreement = ag.sign_agreement;
      pb.pearson = ag.pearson;
      pb.spearman = ag.spearman;
    } else {
      pb.sign_agreement = pb.pearson = pb.spearman = kNaN;
    }
    out.push_back(pb);
  }
  return out;
}

std::string family_report_html(const json& in) {
  Report r("deltaedit: the paper's experiments in two regimes, EXPO with DPO, and merges");
  const json regimes = in.value("regimes", json::array());
  r.add_summary_text(
      "Each regime is a (base, post) pair: the family's light SFT (math-sft over base, the regime the "
      "paper's claims are about) and the retrain pair (a post-training as large as pre-training). The "
      "approximation term is the left Riemann sum of ⟨∇L, D⟩ along W_post → W_post + D; ΔL is measured.");

  // Regimes.
  r.add_section("Regimes");
  {
    std::vector<std::vector<Cell>> rows;
    for (const auto& g : regimes) {
      const json& res = g.value("results", json::object());
      const json& mo = res.value("models", json::object());
      size_t n = all_points(res).size();
      rows.push_back({Cell(g.value("name", g.value("id", std::string("?")))), real(number(g, "delta_over_weight")),
                      Cell(pct(number(mo.value("base", json::object()), "accuracy"))),
                      Cell(pct(number(mo.value("post", json::object()), "accuracy"))),
                      real(number(mo.value("post", json::object()), "loss")), Cell(int64_t(n))});
    }
    r.add_table({"regime", "‖Δ‖/‖W_base‖", "base accuracy", "post accuracy", "post loss", "edits"}, rows,
                "‖Δ‖/‖W_base‖ over the edited tensors, from the checkpoints in f64.");
  }

  // Claims side by side.
  r.add_section("Claims in each regime");
  if (regimes.empty()) {
    r.add_paragraph("No regime was measured.");
  } else {
    std::vector<std::vector<Claim>> per;
    for (const auto& g : regimes) per.push_back(sweep_claims(g.value("results", json::object())));
    std::vector<std::string> header = {"experiment", "claim"};
    for (const auto& g : regimes) header.push_back(g.value("name", std::string("?")));
    std::vector<std::vector<Cell>> rows;
    for (size_t i = 0; i < per[0].size(); ++i) {
      std::vector<Cell> row = {Cell(per[0][i].experiment), Cell(per[0][i].claim)};
      for (const auto& c : per)
        row.push_back(i < c.size() ? Cell(c[i].verdict + " — " + c[i].measured) : Cell(std::string("–")));
      rows.push_back(row);
    }
    r.add_table(header, rows, "Each regime's verdict and what was measured (rules as in each regime's own report).");
  }

  // DARE's tolerance.
  r.add_section("DARE's tolerance against the size of Δ");
  {
    std::vector<Series> series;
    std::vector<std::vector<Cell>> rows;
    for (const auto& g : regimes) {
      const json& res = g.value("results", json::object());
      Series s;
      s.name = fmt::format("{} (‖Δ‖/‖W‖ = {})", g.value("name", std::string("?")),
                           format_number(number(g, "delta_over_weight"), 3));
      std::vector<std::pair<double, double>> pk;
      if (res.contains("experiments") && res["experiments"].contains("F1"))
        for (const auto& p : res["experiments"]["F1"]) {
          const json& pa = p.value("params", json::object());
          if (number(pa, "k") == 0.0) pk.push_back({number(pa, "p"), number(p, "accuracy")});
        }
      std::sort(pk.begin(), pk.end());
      for (const auto& [p, a] : pk) {
        s.x.push_back(p);
        s.y.push_back(a);
        rows.push_back({Cell(g.value("name", std::string("?"))), real(p), Cell(pct(a))});
      }
      series.push_back(s);
    }
    ChartOptions o;
    o.title = "DARE (k = 0): accuracy against the drop rate";
    o.x_title = "drop rate p";
    o.y_title = "accuracy";
    o.y_min = 0;
    o.y_max = 1;
    r.add_chart(line_chart(o, series, {}), "Plain DARE (rescale 1/(1−p)) in each regime.");
    r.add_table({"regime", "p", "accuracy"}, rows);
  }

  // Prediction quality.
  r.add_section("How well the term predicts ΔL, by regime and size of the loss change");
  {
    std::vector<std::vector<Cell>> rows;
    std::vector<Series> series;
    for (const auto& g : regimes) {
      const json& res = g.value("results", json::object());
      for (const auto& b : prediction_bands(res))
        rows.push_back({Cell(g.value("name", std::string("?"))), Cell(b.band), Cell(int64_t(b.n)),
                        Cell(pct(b.sign_agreement)), real(b.pearson), real(b.spearman)});
      Series s;
      s.name = g.value("name", std::string("?"));
      for (const json* p : all_points(res)) {
        s.x.push_back(number(*p, "true_delta_loss"));
        s.y.push_back(number(*p, "approximation_term"));
      }
      series.push_back(s);
    }
    r.add_table({"regime", "|ΔL| band", "edits", "sign agreement", "Pearson", "Spearman"}, rows,
                "Targets: sign agreement ≥ 95 % and Pearson ≥ 0.95 in each regime. The small edits are the "
                "competitive ones, where the sign matters most.");
    ChartOptions o;
    // The linear band is a hundredth of the small-edit band, so that the small edits (terms of
    // 1e-5 to 1e-2) spread over the decades below 0.01 rather than sharing one linear strip.
    constexpr double kLinearBand = kSmallDeltaLoss / 100.0;
    o.title = fmt::format("term against ΔL (symmetric log, linear within ±{})", kLinearBand);
    o.x_title = "true ΔL";
    o.y_title = "approximation term";
    o.y_scale = Scale::SymLog;
    o.x_scale = Scale::SymLog;
    o.symlog_width = kLinearBand;
    o.identity_line = true;
    r.add_chart(scatter_chart(o, series, {}),
                fmt::format("Every edit of each regime; both axes are symmetric-log (linear within ±{}, "
                            "logarithmic beyond), so the edits with |ΔL| < {} spread over their own decades "
                            "instead of piling up at 0. Points on the dotted line y = x are predicted exactly; "
                            "points in the top-left and bottom-right quadrants have the wrong sign.",
                            kLinearBand, kSmallDeltaLoss));
  }

  // EXPO with the DPO loss.
  r.add_section("EXPO on the DPO pair (math-sft → math-dpo, DPO loss)");
  const json& dpo = in.contains("dpo") ? in.at("dpo") : json(nullptr);
  if (!dpo.is_object() || !dpo.contains("experiments")) {
    r.add_paragraph("The DPO-loss sweep was not run.");
  } else {
    std::vector<std::vector<Cell>> rows;
    for (const json* p : all_points(dpo)) {
      const json& pa = p->value("params", json::object());
      rows.push_back({real(number(pa, "alpha")), Cell(pct(number(*p, "accuracy"))), real(number(*p, "loss")),
                      real(number(*p, "approximation_term")), real(number(*p, "true_delta_loss"))});
    }
    const json& mo = dpo.value("models", json::object());
    r.add_paragraph(fmt::format(
        "W(α) = W_dpo + α·(W_dpo − W_sft): α < 0 interpolates toward the SFT model (α = −1 is it), α > 0 "
        "extrapolates (EXPO). DPO loss of the SFT reference {} (log 2 = 0.6931 by construction), of the DPO "
        "model {}.",
        format_number(number(mo.value("base", json::object()), "loss"), 5),
        format_number(number(mo.value("post", json::object()), "loss"), 5)));
    r.add_table({"α", "accuracy", "DPO loss", "approximation term", "true ΔL"}, rows);
  }

  // Merges.
  r.add_section("M1: merging the two experts");
  const json& mg = in.contains("merge") ? in.at("merge") : json(nullptr);
  if (!mg.is_object() || !mg.contains("points")) {
    r.add_paragraph("The merge experiment was not run.");
  } else {
    std::vector<std::string> names;
    for (const auto& e : mg["config"].value("experts", json::array())) names.push_back(e.value("name", std::string("?")));
    const json& mo = mg.value("models", json::object());
    {
      std::vector<std::string> header = {"model"};
      for (const auto& n : names) header.push_back(n + " accuracy");
      std::vector<std::vector<Cell>> rows;
      for (const auto& m : std::vector<std::string>{"base", names.empty() ? "" : names[0], names.size() < 2 ? "" : names[1]}) {
        if (!mo.contains(m)) continue;
        std::vector<Cell> row = {Cell(m == "base" ? std::string("base") : m + " expert")};
        for (const auto& n : names) row.push_back(Cell(pct(number(mo[m].value(n, json::object()), "accuracy"))));
        rows.push_back(row);
      }
      r.add_table(header, rows, "The inputs of every merge, on both tasks.");
    }
    std::vector<std::string> header = {"merge"};
    for (const auto& n : names) header.push_back(n + " accuracy");
    for (const auto& n : names) {
      header.push_back(n + ": term");
      header.push_back(n + ": true ΔL");
    }
    std::vector<std::vector<Cell>> rows;
    std::vector<double> terms, dls;
    for (const auto& p : mg["points"]) {
      std::vector<Cell> row = {Cell(p.value("label", std::string("?")))};
      const json& ts = p.value("tasks", json::object());
      for (const auto& n : names) row.push_back(Cell(pct(number(ts.value(n, json::object()), "accuracy"))));
      for (const auto& n : names) {
        const json& t = ts.value(n, json::object());
        row.push_back(real(number(t, "approximation_term")));
        row.push_back(real(number(t, "true_delta_loss")));
        terms.push_back(number(t, "approximation_term"));
        dls.push_back(number(t, "true_delta_loss"));
      }
      rows.push_back(row);
    }
    r.add_table(header, rows,
                "For task i, ΔL_i = L_i(W_merge) − L_i(W_i) and the term is the Riemann sum along W_i → W_merge: what "
                "the merge costs each expert on its own task.");
    const auto ag = report::agreement(terms, dls);
    r.add_paragraph(fmt::format("Over every (merge, task): sign agreement {}, Pearson {}, Spearman {} ({} pairs).",
                                pct(ag.sign_agreement), format_number(ag.pearson, 3), format_number(ag.spearman, 3),
                                ag.used));
    // Where each merge's cost comes from: the three largest contributions per task.
    std::vector<std::vector<Cell>> top;
    for (const auto& p : mg["points"]) {
      const json& ts = p.value("tasks", json::object());
      for (const auto& n : names) {
        if (!ts.contains(n) || !ts[n].contains("per_tensor")) continue;
        std::vector<std::pair<double, std::string>> c;
        for (const auto& e : ts[n]["per_tensor"]) c.push_back({e.value("contribution", 0.0), e.value("name", std::string())});
        std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) { return std::abs(a.first) > std::abs(b.first); });
        std::string s;
        for (size_t i = 0; i < std::min<size_t>(3, c.size()); ++i)
          s += (i ? "; " : "") + c[i].second + " " + format_number(c[i].first, 3);
        top.push_back({Cell(p.value("label", std::string("?"))), Cell(n), Cell(s)});
      }
    }
    r.add_table({"merge", "task", "largest per-tensor contributions"}, top);
  }
  return r.render();
}

void render_family_report(const json& input, const fs::path& out) {
  fs::create_directories(out / "report");
  const fs::path tmp = out / "report" / ".index.html.tmp";
  {
    const std::string html = family_report_html(input);
    std::FILE* f = std::fopen(tmp.string().c_str(), "wb");
    if (!f) throw std::runtime_error("cannot open " + tmp.string() + " for writing");
    const bool ok = std::fwrite(html.data(), 1, html.size(), f) == html.size() && std::fflush(f) == 0;
    std::fclose(f);
    if (!ok) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, out / "report" / "index.html");
}

}  // namespace deltaedit::experiments
