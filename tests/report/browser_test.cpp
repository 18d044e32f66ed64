// Renders a sample report in headless Chromium and checks what the browser
// made of it: the dumped DOM must hold every chart with its series and a
// non-zero size, and a screenshot must show more than a blank page.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "browser_util.h"
#include "report/html.h"
#include "report/svg.h"

namespace dr = deltaedit::report;
using namespace deltaedit::report::testing;

namespace {
dr::Report sample_report() {
  dr::Report r("deltaedit browser check");
  r.add_summary("model", "tiny").add_summary("post accuracy", dr::Cell::percent(0.754));
  r.add_section("F1: DARE extension");
  std::vector<dr::Series> lines;
  const std::vector<double> p = {0.1, 0.3, 0.5, 0.7, 0.9};
  for (double k : {-1.0, 0.0, 0.8}) {
    dr::Series s;
    s.name = "k=" + dr::format_number(k);
    s.x = p;
    for (double pi : p) s.y.push_back(0.75 - 0.2 * k * pi * pi);
    lines.push_back(s);
  }
  dr::ChartOptions line_opt;
  line_opt.title = "accuracy vs p";
  line_opt.x_title = "p";
  line_opt.y_title = "accuracy";
  r.add_chart(dr::line_chart(line_opt, lines, {{0.754, "post", false, {}}, {0.1, "base", false, {}}}), "F1");
  r.add_table({"k", "p", "accuracy"}, {{-1.0, 0.1, 0.752}, {0.8, 0.9, 0.62}});

  r.add_section("F4: multi-bit BitDelta");
  dr::ChartOptions bar_opt;
  bar_opt.title = "accuracy by bits";
  r.add_chart(dr::bar_chart(bar_opt, {"0", "1", "2", "3"},
                            {{"accuracy", {0.1, 0.7, 0.74, 0.75}, {}}, {"size (bits/param)", {0.0, 1.0, 2.0, 3.0}, {}}}));

  r.add_section("F3: approximation term over tensors");
  dr::ChartOptions hist_opt;
  hist_opt.title = "per-tensor contributions";
  std::vector<double> a, b;
  for (int i = 0; i < 200; ++i) {
    a.push_back(std::sin(i * 0.37) * 0.01);
    b.push_back(std::cos(i * 0.11) * 0.004 + 0.002);
  }
  r.add_chart(dr::histogram_chart(hist_opt, {{"DARE p=0.5", a, {}}, {"magnitude p=0.5", b, {}}}));
  r.add_claims({{"F1", "accuracy flat for k in [0.5, 1.5]", "flat", "reproduced", dr::Verdict::Supported}});
  return r;
}
}  // namespace

TEST(Browser, ChromiumRendersTheReport) {
  ASSERT_TRUE(std::filesystem::exists(kChromium))
      << kChromium << " not found: this test needs a headless Chromium. Install the `chromium` package "
      << "(e.g. `apt-get install -y chromium`; the project's Makefile set-up installs it).";

  const auto dir = make_temp_dir("browser");
  ASSERT_FALSE(dir.empty());
  const auto page = dir / "index.html";
  sample_report().write(page);

  // (1) The DOM as Chromium parsed it.
  const auto profile1 = make_temp_dir("chromium-profile");
  const auto dom_file = dir / "dom.html";
  const int rc_dom = run(chromium_command(profile1, "--dump-dom", page) + " >'" + dom_file.string() + "' 2>'" +
                         (dir / "dump.log").string() + "'");
  ASSERT_EQ(rc_dom, 0) << "chromium --dump-dom failed:\n" << read_file(dir / "dump.log");
  const std::string dom = read_file(dom_file);
  ASSERT_FALSE(dom.empty()) << read_file(dir / "dump.log");
  EXPECT_NE(dom.find("<h1>deltaedit browser check</h1>"), std::string::npos);

  std::vector<std::size_t> charts;
  for (auto p = dom.find("<svg"); p != std::string::npos; p = dom.find("<svg", p + 4))
    if (tag_attributes(dom, p)["class"] == "chart") charts.push_back(p);
  ASSERT_EQ(charts.size(), 3u) << "expected 3 chart <svg> elements in the rendered DOM";
  const std::vector<std::size_t> expected_series = {3, 2, 2};
  for (std::size_t c = 0; c < charts.size(); ++c) {
    auto attrs = tag_attributes(dom, charts[c]);
    SCOPED_TRACE("chart " + std::to_string(c));
    EXPECT_GT(std::stod(attrs["width"].empty() ? "0" : attrs["width"]), 0.0);
    EXPECT_GT(std::stod(attrs["height"].empty() ? "0" : attrs["height"]), 0.0);
    ASSERT_FALSE(attrs["data-series"].empty());
    const auto n = static_cast<std::size_t>(std::stoul(attrs["data-series"]));
    EXPECT_EQ(n, expected_series[c]);
    const std::size_t end = c + 1 < charts.size() ? charts[c + 1] : dom.size();
    const std::string body = dom.substr(charts[c], end - charts[c]);
    EXPECT_NE(body.find("<title>"), std::string::npos);
    // Every series is present and drew something.
    std::size_t series = 0;
    for (auto p = body.find("<g"); p != std::string::npos; p = body.find("<g", p + 2)) {
      auto g = tag_attributes(body, p);
      if (g["class"] != "series") continue;
      ++series;
      EXPECT_GT(std::stoul(g["data-points"].empty() ? "0" : g["data-points"]), 0u) << g["data-name"];
    }
    EXPECT_EQ(series, n);
  }
  EXPECT_EQ(count(dom, "class=\"refline\""), 2u);
  EXPECT_EQ(count(dom, "class=\"point\""), 15u);

  // (2) A screenshot: must exist, be a sizeable PNG and not a single colour.
  const auto profile2 = make_temp_dir("chromium-profile");
  const auto png = dir / "shot.png";
  const int rc_shot = run(chromium_command(profile2, "--screenshot='" + png.string() + "' --window-size=1200,2000", page) +
                          " >'" + (dir / "shot.log").string() + "' 2>&1");
  ASSERT_EQ(rc_shot, 0) << "chromium --screenshot failed:\n" << read_file(dir / "shot.log");
  ASSERT_TRUE(std::filesystem::exists(png)) << read_file(dir / "shot.log");
  const std::string bytes = read_file(png);
  EXPECT_GT(bytes.size(), 10u * 1024u);
  EXPECT_EQ(bytes.rfind("\x89PNG\r\n\x1a\n", 0), 0u);
  std::set<unsigned char> distinct(bytes.begin(), bytes.end());
  EXPECT_GT(distinct.size(), 64u);

  std::error_code ec;
  std::filesystem::remove_all(profile1, ec);
  std::filesystem::remove_all(profile2, ec);
  if (!HasFailure()) std::filesystem::remove_all(dir, ec);
  else std::cerr << "kept " << dir << " for inspection\n";
}
