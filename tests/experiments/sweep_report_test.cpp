// The sweep report on synthetic results.json data: files written, every
// experiment section, CSV rows, claims with verdicts that follow the data,
// correlation numbers, well-formed self-contained HTML, graceful handling of
// missing experiments and null/NaN values, and a headless Chromium rendering.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "report/cell.h"
#include "report/correlation.h"
#include "../report/browser_util.h"
#include "report/html.h"
#include "report/svg.h"
#include "experiments/sweep_report.h"

namespace dr = deltaedit::report;
namespace dx = deltaedit::experiments;
using namespace deltaedit::report::testing;
using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// ---------------------------------------------------------------- synthetic data

struct Shape {
  bool grad_destroys = true;  // T1 biased by Δ·∇ far below post
  bool dare_near_zero = true; // F1/F3 DARE terms tiny and F1 k=0 accuracy near post
  bool signs_agree = true;    // true ΔL has the sign of the term
  bool expo_improves = true;  // F6 terms negative for small α > 0
};

json per_tensor(double total, int n, double spread, int salt) {
  // n contributions summing to `total`, spread around it.
  json list = json::array();
  double sum = 0.0;
  for (int i = 0; i < n - 1; ++i) {
    const double c = total / n + spread * std::sin(0.7 * i + salt);
    sum += c;
    list.push_back({{"name", fmt::format("model.layers.{}.mlp.down_proj.weight", i)}, {"contribution", c}});
  }
  list.push_back({{"name", "lm_head.weight"}, {"contribution", total - sum}});
  return list;
}

json point(const std::string& experiment, const std::string& id, const std::string& label, const std::string& op,
           json params, json accuracy, double term, const Shape& shape, int salt) {
  const double truth = (shape.signs_agree ? 1.0 : -1.0) * (term * 1.04 + 1e-11 * std::sin(salt));
  return {{"id", experiment + "/" + id},
          {"experiment", experiment},
          {"label", label},
          {"ops", json::array({op})},
          {"params", std::move(params)},
          {"accuracy", std::move(accuracy)},
          {"loss", 1.5 + truth},
          {"loss_post", 1.5},
          {"approximation_term", term},
          {"true_delta_loss", truth},
          {"gap", truth - term},
          {"intensity", std::fabs(term) * 100.0},
          {"per_tensor", per_tensor(term, 12, std::fabs(term) * 0.3 + 1e-8, salt)},
          {"seconds", 0.5 + 0.01 * salt}};
}

json synthetic_results(const Shape& shape = {}) {
  json ex = json::object();
  int salt = 0;
  const double post = 0.76;

  json f1 = json::array();
  for (double k : {-1.0, -0.5, 0.0, 0.5, 0.8}) {
    for (int i = 1; i <= 9; ++i) {
      const double p = i / 10.0;
      double term = 2e-5 * (1.0 - k) * (1.0 - k) * p * p;
      double acc = post - 0.4 * (1.0 - k) * (1.0 - k) * p * p * p / 4.0;
      if (k == 0.0) {
        term = shape.dare_near_zero ? 1e-8 * std::sin(i) : 4e-4 * p;
        acc = shape.dare_near_zero ? post - 0.01 * p : post - 0.3 * p;
      }
      f1.push_back(point("F1", fmt::format("p={},k={}", p, k), fmt::format("dare p={} k={}", p, k),
                         fmt::format("dare:p={},k={}", p, k), {{"p", p}, {"k", k}}, std::max(acc, 0.0), term, shape,
                         ++salt));
    }
  }
  ex["F1"] = f1;

  json t1 = json::array();
  for (const char* m : {"random", "biased_delta", "biased_grad"}) {
    for (double k : {0.5, 0.7, 0.9, 1.1, 1.3, 1.5}) {
      double acc = post - 0.005 * std::fabs(k - 1.0);
      double term = 1e-7 * (k - 1.0);
      if (std::string(m) == "biased_delta") acc = post - 0.012, term = 3e-6 * std::fabs(k - 1.0);
      if (std::string(m) == "biased_grad") {
        acc = shape.grad_destroys ? 0.05 + 0.1 * std::fabs(k - 1.0) : post - 0.01;
        term = 5e-4 * std::fabs(k - 1.0) + 1e-5;
      }
      t1.push_back(point("T1", fmt::format("{},k={}", m, k), fmt::format("{} k={}", m, k),
                         fmt::format("biased:k={}", k), {{"method", m}, {"k", k}}, acc, term, shape, ++salt));
    }
  }
  ex["T1"] = t1;

  json f3 = json::array();
  for (const char* m : {"dare", "drop", "magnitude"}) {
    for (double p : {0.1, 0.3, 0.5, 0.7, 0.9}) {
      double term = std::string(m) == "drop" ? 2e-4 * p : 8e-5 * p;
      if (std::string(m) == "dare") term = shape.dare_near_zero ? 2e-8 * std::cos(p * 7.0) : 3e-4 * p;
      f3.push_back(point("F3", fmt::format("{},p={}", m, p), fmt::format("{} p={}", m, p),
                         fmt::format("{}:p={}", m, p), {{"method", m}, {"p", p}}, nullptr, term, shape, ++salt));
    }
  }
  f3.push_back(point("F3", "bitdelta", "bitdelta", "bitdelta", {{"method", "bitdelta"}, {"p", nullptr}}, nullptr, 1.5e-4,
                     shape, ++salt));
  f3.push_back(point("F3", "lowrank", "lowrank ratio=0.1", "lowrank:ratio=0.1", {{"method", "lowrank"}, {"p", nullptr}},
                     nullptr, 2.5e-4, shape, ++salt));
  ex["F3"] = f3;

  json f4 = json::array();
  for (int b = 0; b <= 5; ++b)
    f4.push_back(point("F4", fmt::format("bits={}", b), fmt::format("bitdelta bits={}", b),
                       fmt::format("bitdelta:bits={}", b), {{"bits", b}}, post - 0.3 / (1 << (2 * b)),
                       1.5e-4 / (1 << (2 * b)), shape, ++salt));
  ex["F4"] = f4;

  json f5 = json::array();
  for (double s : {0.5, 1.0, 1.5, 2.0, 2.5, 3.0})
    f5.push_back(point("F5", fmt::format("multiple,s={}", s), fmt::format("bitdelta s={}", s),
                       fmt::format("bitdelta:s={}", s), {{"variant", "multiple"}, {"s", s}},
                       post - 0.05 * (s - 1.5) * (s - 1.5), 1e-4 * (s - 1.5) * (s - 1.5) + 2e-5, shape, ++salt));
  f5.push_back(point("F5", "uniform", "resample uniform", "resample:dist=uniform", {{"variant", "uniform"}, {"s", nullptr}},
                     post - 0.08, 1.8e-4, shape, ++salt));
  f5.push_back(point("F5", "normal", "resample normal", "resample:dist=normal", {{"variant", "normal"}, {"s", nullptr}},
                     post - 0.06, 1.4e-4, shape, ++salt));
  ex["F5"] = f5;

  json f6 = json::array();
  for (int i = -10; i <= 10; ++i) {
    const double a = i / 10.0;
    const double term = 1e-4 * a * a - (shape.expo_improves ? 2e-5 * a : 0.0) + (shape.expo_improves ? 0.0 : 1e-6);
    f6.push_back(point("F6", fmt::format("alpha={}", a), fmt::format("scale alpha={}", a), fmt::format("scale:alpha={}", a),
                       {{"alpha", a}}, post + 0.02 * a - 0.05 * a * a, term, shape, ++salt));
  }
  ex["F6"] = f6;

  std::size_t n = 0;
  for (const auto& [k, v] : ex.items()) n += v.size();
  return {{"config",
           {{"base", "zoo/base"}, {"post", "zoo/post"}, {"seed", 7}, {"steps", 5}, {"eval_examples", 200},
            {"loss_examples", 64}}},
          {"models", {{"base", {{"accuracy", 0.30}, {"loss", 2.0}}}, {"post", {{"accuracy", post}, {"loss", 1.5}}}}},
          {"experiments", ex},
          {"timing", {{"seconds", 754.2}, {"points", n}}}};
}

// Experiments missing or empty, null accuracies and NaN numbers.
json damaged_results() {
  json r = synthetic_results();
  r["experiments"].erase("T1");
  r["experiments"].erase("F5");
  r["experiments"]["F4"] = json::array();
  r["models"].erase("base");
  auto& f1 = r["experiments"]["F1"];
  for (std::size_t i = 0; i < f1.size(); i += 2) f1[i]["accuracy"] = nullptr;
  f1[1]["approximation_term"] = kNaN;
  f1[3]["true_delta_loss"] = nullptr;
  f1[5].erase("per_tensor");
  f1[7]["params"] = nullptr;
  r["experiments"]["F3"][0]["approximation_term"] = kNaN;
  r["experiments"]["F3"][1]["per_tensor"] = json::array();
  r["experiments"]["F6"][0] = "not a point";
  r["timing"] = nullptr;
  return r;
}
std::vector<std::string> files_in(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(std::filesystem::relative(e.path(), dir).generic_string());
  std::sort(out.begin(), out.end());
  return out;
}

// Balanced, properly nested tags with quoted attributes and known entities;
// returns "" when well-formed, else the first problem found.
std::string xml_problem(const std::string& doc) {
  std::vector<std::string> open;
  std::size_t i = 0, roots = 0;
  while (i < doc.size()) {
    if (doc[i] == '&') {
      const auto semi = doc.find(';', i);
      if (semi == std::string::npos || semi - i > 10) return "bad reference at " + std::to_string(i);
      const std::string ref = doc.substr(i + 1, semi - i - 1);
      static const std::set<std::string> named = {"amp", "lt", "gt", "quot", "apos"};
      if (!named.count(ref) && (ref.empty() || ref[0] != '#')) return "unknown entity &" + ref + ";";
      i = semi + 1;
      continue;
    }
    if (doc[i] != '<') {
      ++i;
      continue;
    }
    if (doc.compare(i, 4, "<!--") == 0) {
      const auto end = doc.find("-->", i);
      if (end == std::string::npos) return "unterminated comment";
      i = end + 3;
      continue;
    }
    if (doc.compare(i, 2, "<!") == 0 || doc.compare(i, 2, "<?") == 0) {
      i = doc.find('>', i) + 1;
      continue;
    }
    const bool closing = doc.compare(i, 2, "</") == 0;
    std::size_t j = i + (closing ? 2 : 1);
    const std::size_t name_start = j;
    while (j < doc.size() && (std::isalnum(static_cast<unsigned char>(doc[j])) || doc[j] == '-' || doc[j] == ':')) ++j;
    const std::string name = doc.substr(name_start, j - name_start);
    if (name.empty()) return "bad '<' at " + std::to_string(i);
    // Find the end of the tag, skipping quoted attribute values.
    char quote = 0;
    for (; j < doc.size(); ++j) {
      if (quote) {
        if (doc[j] == '<') return "'<' in an attribute of <" + name + ">";
        if (doc[j] == quote) quote = 0;
      } else if (doc[j] == '"' || doc[j] == '\'') {
        if (doc[j - 1] != '=') return "stray quote in <" + name + ">";
        quote = doc[j];
      } else if (doc[j] == '=') {
        if (j + 1 >= doc.size() || (doc[j + 1] != '"' && doc[j + 1] != '\'')) return "unquoted attribute in <" + name + ">";
      } else if (doc[j] == '>') {
        break;
      }
    }
    if (j >= doc.size()) return "unterminated tag <" + name + ">";
    if (closing) {
      if (open.empty() || open.back() != name) return "</" + name + "> closes <" + (open.empty() ? "" : open.back()) + ">";
      open.pop_back();
    } else if (doc[j - 1] != '/') {
      if (open.empty() && ++roots > 1) return "second root <" + name + ">";
      open.push_back(name);
    }
    i = j + 1;
  }
  if (!open.empty()) return "unclosed <" + open.back() + ">";
  return roots == 1 ? "" : "no root element";
}

// Lines of a CSV file without embedded line breaks (CRLF separated).
std::size_t csv_lines(const std::string& text) { return count(text, "\r\n"); }

// The <tr> of the table row whose first cell is `first`.
std::string table_row(const std::string& html, const std::string& first) {
  const auto at = html.find("<tr><td>" + first + "</td>");
  if (at == std::string::npos) return "";
  return html.substr(at, html.find("</tr>", at) - at);
}

std::size_t points_of(const json& results, const std::string& id) {
  const auto& ex = results["experiments"];
  return ex.contains(id) && ex[id].is_array() ? ex[id].size() : 0;
}

const char* const kSections[] = {
    "Claims vs measured",
    "F1: DARE extension, accuracy and loss vs p for several k",
    "T1: random vs biased selection",
    "F3: approximation term per method and over tensors",
    "F4: multi-bit BitDelta",
    "F5: BitDelta magnitude multiple and resampled magnitudes",
    "F6/F7: scaling the delta, interpolation and extrapolation",
    "How well the approximation term predicts \u0394L",
    "Configuration",
};

}  // namespace

// ---------------------------------------------------------------- tests

TEST(SweepReport, WritesTheReportAndOneCsvPerExperiment) {
  const json results = synthetic_results();
  const auto dir = make_temp_dir("sweep-report");
  ASSERT_FALSE(dir.empty());
  dx::render_sweep_report(results, dir);

  EXPECT_EQ(files_in(dir), (std::vector<std::string>{"F1.csv", "F3.csv", "F4.csv", "F5.csv", "F6.csv", "T1.csv",
                                                     "report/index.html"}));
  for (const char* id : dx::kSweepExperiments) {
    SCOPED_TRACE(id);
    const std::string csv = read_file(dir / (std::string(id) + ".csv"));
    EXPECT_EQ(csv_lines(csv), points_of(results, id) + 1);
    EXPECT_EQ(csv.rfind("id,label,ops,", 0), 0u);
    EXPECT_NE(csv.find(",accuracy,loss,loss_post,approximation_term,true_delta_loss,gap,intensity,seconds\r\n"),
              std::string::npos);
  }
  // Parameter columns in the grid's order, values exact; ops with a comma are quoted.
  const std::string f1 = read_file(dir / "F1.csv");
  EXPECT_EQ(f1.rfind("id,label,ops,p,k,accuracy,", 0), 0u);
  EXPECT_NE(f1.find("\"F1/p=0.1,k=-1\",dare p=0.1 k=-1,\"dare:p=0.1,k=-1\",0.1,-1,"), std::string::npos);
  const std::string f3 = read_file(dir / "F3.csv");
  EXPECT_EQ(f3.rfind("id,label,ops,method,p,accuracy,", 0), 0u);
  EXPECT_NE(f3.find("F3/bitdelta,bitdelta,bitdelta,bitdelta,,,"), std::string::npos) << "null p and accuracy are empty";
  EXPECT_EQ(read_file(dir / "F4.csv").rfind("id,label,ops,bits,accuracy,", 0), 0u);

  const std::string html = read_file(dir / "report" / "index.html");
  EXPECT_EQ(html, dx::sweep_report_html(results));
  for (const char* s : kSections) EXPECT_NE(html.find("<h2>" + dr::xml_escape(s) + "</h2>"), std::string::npos) << s;
  EXPECT_EQ(html.find("Not measured"), std::string::npos);
  // Summary block.
  EXPECT_NE(html.find("<dt>post accuracy / loss</dt><dd>76.0% / 1.5</dd>"), std::string::npos);
  EXPECT_NE(html.find("<dt>base accuracy / loss</dt><dd>30.0% / 2</dd>"), std::string::npos);
  EXPECT_NE(html.find(fmt::format("<dt>edits measured</dt><dd>{} ({} with accuracy)</dd>",
                                  results["timing"]["points"].get<std::size_t>(),
                                  results["timing"]["points"].get<std::size_t>() - points_of(results, "F3"))),
            std::string::npos);
  EXPECT_NE(html.find("<dt>seed</dt><dd>7</dd>"), std::string::npos);
  EXPECT_NE(html.find("<dt>C (nodes of the approximation term)</dt><dd>5</dd>"), std::string::npos);
  EXPECT_NE(html.find("<dt>total time</dt><dd>12.6 min (754 s)</dd>"), std::string::npos);
  // Charts: F1 3, T1 2, F3 bars + 5 histograms, F4 2, F5 3, F6 2, agreement 1.
  EXPECT_EQ(count(html, "class=\"chart\""), 3u + 2u + 6u + 2u + 3u + 2u + 1u);
  // One table of points per experiment, with one row per point.
  for (const char* id : dx::kSweepExperiments)
    EXPECT_NE(html.find(fmt::format("<caption>All {} edits of {}</caption>", points_of(results, id), id)),
              std::string::npos)
        << id;
  // Top-5 tensors of the representative F3 edits.
  EXPECT_NE(html.find("Top 5 tensors by |contribution|"), std::string::npos);
  EXPECT_EQ(count(html, "<tr><td>magnitude p=0.9</td><td class=\"num\">"), 5u);
  // Reference lines and reproduction footer.
  EXPECT_NE(html.find("post 76.0%"), std::string::npos);
  EXPECT_NE(html.find("base 30.0%"), std::string::npos);
  EXPECT_NE(html.find("deltaedit sweep CONFIG --out DIR"), std::string::npos);
  EXPECT_NE(html.find("deltaedit demo"), std::string::npos);

  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST(SweepReport, HtmlIsWellFormedAndSelfContained) {
  for (const json& results : {synthetic_results(), damaged_results(), json::object(), json(nullptr)}) {
    const std::string html = dx::sweep_report_html(results);
    const std::string body = html.substr(html.find("<html"));
    EXPECT_EQ(xml_problem(body), "");
    for (const char* external : {"<script", "<link", "<img", "<iframe", "src=", "href=\"http", "url(", "@import"})
      EXPECT_EQ(html.find(external), std::string::npos) << external;
  }
}

TEST(SweepReport, ClaimsHoldWhereTheDataSaysSo) {
  const auto claims = dx::sweep_claims(synthetic_results());
  ASSERT_EQ(claims.size(), 8u);
  for (const auto& c : claims) {
    SCOPED_TRACE(c.experiment + ": " + c.claim + " | " + c.measured + " | " + c.verdict);
    EXPECT_EQ(c.kind, dr::Verdict::Supported);
    EXPECT_EQ(c.verdict.rfind("holds", 0), 0u);
    EXPECT_FALSE(c.measured.empty());
  }
  EXPECT_NE(claims[7].verdict.find("\u2265 90.0% and Spearman"), std::string::npos) << claims[7].verdict;
  EXPECT_EQ(claims[0].measured.rfind("T1 random: accuracy ", 0), 0u);
  EXPECT_NE(claims[0].measured.find(" over 6 edits vs post 76.0%"), std::string::npos)
      << claims[0].measured;
  EXPECT_NE(claims[2].measured.find("6.0%\u201310.0%"), std::string::npos) << claims[2].measured;
}

TEST(SweepReport, ClaimsFailWhereTheDataSaysSo) {
  Shape shape;
  shape.grad_destroys = false;
  shape.dare_near_zero = false;
  shape.signs_agree = false;
  shape.expo_improves = false;
  const json results = synthetic_results(shape);
  const auto claims = dx::sweep_claims(results);
  ASSERT_EQ(claims.size(), 8u);
  auto kind = [&](std::size_t i) { return claims[i].kind; };
  EXPECT_EQ(kind(0), dr::Verdict::Supported);     // random still near post
  EXPECT_EQ(kind(1), dr::Verdict::Supported);     // biased by Δ still near post
  EXPECT_EQ(kind(2), dr::Verdict::NotSupported);  // biased by Δ·∇ no longer destroys
  EXPECT_EQ(kind(3), dr::Verdict::NotSupported);  // DARE k=0 p=0.9: far from post, term large
  EXPECT_EQ(kind(4), dr::Verdict::Partial);       // DARE not ≈ 0, the others still > 0
  EXPECT_EQ(kind(5), dr::Verdict::Supported);     // F4 unchanged
  EXPECT_EQ(kind(6), dr::Verdict::Partial);       // interpolation raises the loss, extrapolation never lowers it
  EXPECT_EQ(kind(7), dr::Verdict::NotSupported);  // signs disagree
  EXPECT_EQ(claims[2].verdict.rfind("does not hold: 0 of 6 destroyed", 0), 0u) << claims[2].verdict;
  EXPECT_NE(claims[6].verdict.find("no extrapolation lowers the loss"), std::string::npos) << claims[6].verdict;
  EXPECT_NE(claims[7].verdict.find("< 70.0% and Spearman"), std::string::npos) << claims[7].verdict;

  // The page shows the same verdicts, coloured by kind.
  const std::string html = dx::sweep_report_html(results);
  EXPECT_NE(html.find("<table class=\"claims\">"), std::string::npos);
  EXPECT_EQ(count(html, "class=\"verdict verdict-notsupported\""), 3u);
  EXPECT_EQ(count(html, "class=\"verdict verdict-partial\""), 2u);
  EXPECT_EQ(count(html, "class=\"verdict verdict-supported\""), 3u);
  for (const auto& c : claims) EXPECT_NE(html.find(dr::xml_escape(c.verdict)), std::string::npos) << c.verdict;
}

TEST(SweepReport, CorrelationMatchesAgreement) {
  Shape noisy;
  json results = synthetic_results(noisy);
  // Disturb a few pairs so the statistics are not all 1.
  results["experiments"]["F6"][3]["true_delta_loss"] = -3e-4;
  results["experiments"]["F1"][10]["true_delta_loss"] = 5e-4;
  results["experiments"]["F4"][2]["approximation_term"] = nullptr;
  std::vector<double> x, y, gap;
  for (const char* id : dx::kSweepExperiments)
    for (const auto& p : results["experiments"][id]) {
      x.push_back(p["approximation_term"].is_number() ? p["approximation_term"].get<double>() : kNaN);
      y.push_back(p["true_delta_loss"].get<double>());
      gap.push_back(std::fabs(p["gap"].get<double>()));
    }
  const dr::Agreement a = dr::agreement(x, y);
  EXPECT_EQ(a.dropped, 1u);
  EXPECT_LT(a.pearson, 0.999);
  EXPECT_LT(a.sign_agreement, 1.0);
  // The statistics from their definitions, written out here (long double, two-pass), not through
  // the report library: Pearson of the finite pairs, Spearman as Pearson of average ranks, and
  // the fraction of pairs whose signs agree.
  {
    std::vector<long double> fx, fy;
    for (size_t i = 0; i < x.size(); ++i)
      if (std::isfinite(x[i]) && std::isfinite(y[i])) fx.push_back(x[i]), fy.push_back(y[i]);
    ASSERT_EQ(fx.size(), a.used);
    auto corr = [](const std::vector<long double>& u, const std::vector<long double>& v) {
      long double mu = 0, mv = 0;
      for (size_t i = 0; i < u.size(); ++i) mu += u[i], mv += v[i];
      mu /= u.size();
      mv /= v.size();
      long double suv = 0, suu = 0, svv = 0;
      for (size_t i = 0; i < u.size(); ++i) {
        suv += (u[i] - mu) * (v[i] - mv);
        suu += (u[i] - mu) * (u[i] - mu);
        svv += (v[i] - mv) * (v[i] - mv);
      }
      return double(suv / std::sqrt(suu * svv));
    };
    auto ranks = [](const std::vector<long double>& u) {
      std::vector<long double> r(u.size());
      for (size_t i = 0; i < u.size(); ++i) {
        size_t less = 0, equal = 0;
        for (size_t j = 0; j < u.size(); ++j) less += u[j] < u[i], equal += u[j] == u[i];
        r[i] = less + (equal + 1) / 2.0L;  // the average of ranks less+1 .. less+equal
      }
      return r;
    };
    size_t agree = 0;
    auto sgn = [](long double v) { return (v > 0) - (v < 0); };
    for (size_t i = 0; i < fx.size(); ++i) agree += sgn(fx[i]) == sgn(fy[i]);
    EXPECT_NEAR(a.pearson, corr(fx, fy), 1e-12);
    EXPECT_NEAR(a.spearman, corr(ranks(fx), ranks(fy)), 1e-12);
    EXPECT_DOUBLE_EQ(a.sign_agreement, double(agree) / double(fx.size()));
  }
  double mean_gap = 0.0;
  for (double g : gap) mean_gap += g;
  mean_gap /= static_cast<double>(gap.size());

  const std::string html = dx::sweep_report_html(results);
  const std::string row = table_row(html, "all edits");
  ASSERT_FALSE(row.empty());
  std::vector<std::string> cells;
  for (auto p = row.find("<td"); p != std::string::npos; p = row.find("<td", p + 3)) {
    const auto start = row.find('>', p) + 1;
    cells.push_back(row.substr(start, row.find("</td>", start) - start));
  }
  ASSERT_EQ(cells.size(), 8u) << row;
  EXPECT_EQ(cells[1], std::to_string(a.used));
  EXPECT_EQ(cells[2], std::to_string(a.dropped));
  EXPECT_EQ(cells[3], dr::format_number(a.pearson, 4));
  EXPECT_EQ(cells[4], dr::format_number(a.spearman, 4));
  EXPECT_EQ(cells[5], dr::format_number(a.sign_agreement, 4));
  EXPECT_EQ(cells[6], dr::format_number(mean_gap, 4));
  // The claims table quotes the same numbers.
  const auto claims = dx::sweep_claims(results);
  EXPECT_NE(claims[7].measured.find("Pearson " + dr::format_number(a.pearson, 3)), std::string::npos)
      << claims[7].measured;
}

TEST(SweepReport, MissingExperimentsNullsAndNaNs) {
  const json results = damaged_results();
  const auto dir = make_temp_dir("sweep-report-damaged");
  ASSERT_FALSE(dir.empty());
  ASSERT_NO_THROW(dx::render_sweep_report(results, dir));
  // Absent experiments get no CSV; an empty one gets a header-only CSV.
  EXPECT_EQ(files_in(dir),
            (std::vector<std::string>{"F1.csv", "F3.csv", "F4.csv", "F6.csv", "report/index.html"}));
  EXPECT_EQ(csv_lines(read_file(dir / "F4.csv")), 1u);
  EXPECT_EQ(csv_lines(read_file(dir / "F1.csv")), points_of(results, "F1") + 1);
  EXPECT_EQ(csv_lines(read_file(dir / "F6.csv")), points_of(results, "F6"));  // the non-object entry is skipped
  const std::string f1 = read_file(dir / "F1.csv");
  EXPECT_NE(f1.find("\"F1/p=0.1,k=-1\",dare p=0.1 k=-1,\"dare:p=0.1,k=-1\",0.1,-1,,"), std::string::npos)
      << "a null accuracy is an empty field";
  EXPECT_NE(f1.find(",nan,"), std::string::npos) << "a NaN term stays visible";

  const std::string html = read_file(dir / "report" / "index.html");
  for (const char* s : kSections) EXPECT_NE(html.find("<h2>" + dr::xml_escape(s) + "</h2>"), std::string::npos) << s;
  EXPECT_NE(html.find("Not measured: results.json has no \u201cT1\u201d experiment."), std::string::npos);
  EXPECT_NE(html.find("Not measured: results.json has no \u201cF5\u201d experiment."), std::string::npos);
  EXPECT_NE(html.find("Not measured: the \u201cF4\u201d experiment of results.json holds no points."), std::string::npos);
  EXPECT_NE(html.find("<dt>base accuracy / loss</dt><dd>n/a / n/a</dd>"), std::string::npos);
  EXPECT_NE(html.find("<dt>total time</dt><dd>n/a</dd>"), std::string::npos);
  EXPECT_NE(html.find("<td>n/a</td>"), std::string::npos);

  const auto claims = dx::sweep_claims(results);
  ASSERT_EQ(claims.size(), 8u);
  EXPECT_EQ(claims[1].kind, dr::Verdict::Inconclusive);  // no T1
  EXPECT_EQ(claims[2].kind, dr::Verdict::Inconclusive);
  EXPECT_EQ(claims[5].kind, dr::Verdict::Inconclusive);  // F4 empty
  // Claim 1 falls back to F1 with k in [0.5, 1.5].
  EXPECT_NE(claims[0].measured.find("F1 with k in [0.5, 1.5]"), std::string::npos) << claims[0].measured;

  // Nothing at all: still a page with every section saying what is missing.
  for (const json& empty : {json::object(), json(nullptr), json{{"experiments", {{"F1", 3}}}}}) {
    const auto d = make_temp_dir("sweep-report-empty");
    ASSERT_NO_THROW(dx::render_sweep_report(empty, d));
    const std::string page = read_file(d / "report" / "index.html");
    EXPECT_GE(count(page, "Not "), 6u);
    for (const auto& c : dx::sweep_claims(empty)) EXPECT_EQ(c.kind, dr::Verdict::Inconclusive) << c.claim;
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

// ---------------------------------------------------------------- headless Chromium

namespace {
}  // namespace

TEST(SweepReportBrowser, ChromiumRendersEveryChart) {
  ASSERT_TRUE(std::filesystem::exists(kChromium))
      << kChromium << " not found: this test needs a headless Chromium. Install the `chromium` package "
      << "(e.g. `apt-get install -y chromium`).";

  const auto dir = make_temp_dir("sweep-browser");
  ASSERT_FALSE(dir.empty());
  dx::render_sweep_report(synthetic_results(), dir);
  const auto page = dir / "report" / "index.html";
  const std::string source = read_file(page);
  const std::size_t expected_charts = count(source, "class=\"chart\"");
  ASSERT_GT(expected_charts, 10u);

  const auto profile1 = make_temp_dir("chromium-profile");
  const auto dom_file = dir / "dom.html";
  const int rc_dom = run(chromium_command(profile1, "--dump-dom", page) + " >'" + dom_file.string() + "' 2>'" +
                         (dir / "dump.log").string() + "'");
  ASSERT_EQ(rc_dom, 0) << "chromium --dump-dom failed:\n" << read_file(dir / "dump.log");
  const std::string dom = read_file(dom_file);
  ASSERT_FALSE(dom.empty()) << read_file(dir / "dump.log");
  EXPECT_NE(dom.find("<h1>deltaedit sweep: editing delta parameters</h1>"), std::string::npos);

  std::vector<std::size_t> charts;
  for (auto p = dom.find("<svg"); p != std::string::npos; p = dom.find("<svg", p + 4))
    if (tag_attributes(dom, p)["class"] == "chart") charts.push_back(p);
  ASSERT_EQ(charts.size(), expected_charts) << "every chart of the page must be in the rendered DOM";
  std::size_t drawn_marks = 0;
  for (std::size_t c = 0; c < charts.size(); ++c) {
    auto attrs = tag_attributes(dom, charts[c]);
    const std::size_t end = c + 1 < charts.size() ? charts[c + 1] : dom.size();
    const std::string body = dom.substr(charts[c], end - charts[c]);
    const auto title_at = body.find("<title>");
    SCOPED_TRACE("chart " + std::to_string(c) + ": " +
                 (title_at == std::string::npos ? "" : body.substr(title_at + 7, body.find("</title>") - title_at - 7)));
    EXPECT_GT(std::stod(attrs["width"].empty() ? "0" : attrs["width"]), 0.0);
    EXPECT_GT(std::stod(attrs["height"].empty() ? "0" : attrs["height"]), 0.0);
    ASSERT_FALSE(attrs["data-series"].empty());
    const auto n = static_cast<std::size_t>(std::stoul(attrs["data-series"]));
    EXPECT_GT(n, 0u);
    std::size_t series = 0;
    for (auto p = body.find("<g"); p != std::string::npos; p = body.find("<g", p + 2)) {
      auto g = tag_attributes(body, p);
      if (g["class"] != "series") continue;
      ++series;
      EXPECT_GT(std::stoul(g["data-points"].empty() ? "0" : g["data-points"]), 0u) << g["data-name"];
    }
    EXPECT_EQ(series, n);
    drawn_marks += count(body, "class=\"point\"") + count(body, "class=\"bar\"");
  }
  EXPECT_GT(drawn_marks, 200u);

  const auto profile2 = make_temp_dir("chromium-profile");
  const auto png = dir / "shot.png";
  const int rc_shot = run(chromium_command(profile2, "--screenshot='" + png.string() + "' --window-size=1200,3000", page) +
                          " >'" + (dir / "shot.log").string() + "' 2>&1");
  ASSERT_EQ(rc_shot, 0) << "chromium --screenshot failed:\n" << read_file(dir / "shot.log");
  ASSERT_TRUE(std::filesystem::exists(png)) << read_file(dir / "shot.log");
  const std::string bytes = read_file(png);
  EXPECT_GT(bytes.size(), 20u * 1024u);
  EXPECT_EQ(bytes.rfind("\x89PNG\r\n\x1a\n", 0), 0u);
  std::set<unsigned char> distinct(bytes.begin(), bytes.end());
  EXPECT_GT(distinct.size(), 64u);

  std::error_code ec;
  std::filesystem::remove_all(profile1, ec);
  std::filesystem::remove_all(profile2, ec);
  if (!HasFailure()) std::filesystem::remove_all(dir, ec);
  else std::cerr << "kept " << dir << " for inspection\n";
}
