#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "report/cell.h"
#include "report/correlation.h"
#include "report/csv.h"
#include "report/html.h"
#include "report/svg.h"

namespace dr = deltaedit::report;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

std::size_t count(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = haystack.find(needle); p != std::string::npos; p = haystack.find(needle, p + needle.size())) ++n;
  return n;
}

// A small XML well-formedness check: balanced, properly nested elements with a
// single root, quoted and unique attributes, no '<' in attribute values, and
// only the predefined or numeric character references. Returns "" when
// well-formed, else a description of the first problem.
std::string xml_problem(const std::string& doc) {
  std::vector<std::string> stack;
  std::size_t roots = 0;
  std::size_t i = 0;
  auto is_name_start = [](char c) {
    return std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == ':';
  };
  auto is_name_char = [&](char c) {
    return is_name_start(c) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.';
  };
  auto where = [&](std::size_t at) { return " at offset " + std::to_string(at); };
  auto check_reference = [&](std::size_t at) -> std::string {
    const auto semi = doc.find(';', at);
    if (semi == std::string::npos || semi - at > 12) return "unterminated reference" + where(at);
    const std::string ref = doc.substr(at + 1, semi - at - 1);
    static const std::set<std::string> named = {"amp", "lt", "gt", "quot", "apos"};
    if (named.count(ref)) return "";
    if (ref.size() > 1 && ref[0] == '#') {
      const bool hex = ref[1] == 'x';
      const std::string digits = ref.substr(hex ? 2 : 1);
      if (digits.empty()) return "empty character reference" + where(at);
      for (char c : digits)
        if (!(hex ? std::isxdigit(static_cast<unsigned char>(c)) : std::isdigit(static_cast<unsigned char>(c))))
          return "bad character reference" + where(at);
      return "";
    }
    return "undefined entity &" + ref + ";" + where(at);
  };
  while (i < doc.size()) {
    if (doc[i] == '&') {
      if (auto e = check_reference(i); !e.empty()) return e;
      ++i;
      continue;
    }
    if (doc[i] != '<') {
      if (stack.empty() && !std::isspace(static_cast<unsigned char>(doc[i]))) return "text outside the root" + where(i);
      ++i;
      continue;
    }
    if (doc.compare(i, 4, "<!--") == 0) {
      const auto end = doc.find("-->", i + 4);
      if (end == std::string::npos) return "unterminated comment" + where(i);
      i = end + 3;
      continue;
    }
    if (doc.compare(i, 9, "<![CDATA[") == 0) {
      const auto end = doc.find("]]>", i);
      if (end == std::string::npos || stack.empty()) return "bad CDATA" + where(i);
      i = end + 3;
      continue;
    }
    if (doc.compare(i, 2, "<?") == 0 || doc.compare(i, 9, "<!DOCTYPE") == 0) {
      if (roots != 0 || !stack.empty()) return "prolog item after the root" + where(i);
      const auto end = doc.find('>', i);
      if (end == std::string::npos) return "unterminated prolog item" + where(i);
      i = end + 1;
      continue;
    }
    if (doc.compare(i, 2, "</") == 0) {
      std::size_t j = i + 2;
      while (j < doc.size() && is_name_char(doc[j])) ++j;
      const std::string name = doc.substr(i + 2, j - i - 2);
      while (j < doc.size() && std::isspace(static_cast<unsigned char>(doc[j]))) ++j;
      if (j >= doc.size() || doc[j] != '>') return "bad end tag" + where(i);
      if (stack.empty() || stack.back() != name)
        return "end tag </" + name + "> does not match <" + (stack.empty() ? "" : stack.back()) + ">" + where(i);
      stack.pop_back();
      i = j + 1;
      continue;
    }
    // Start tag.
    std::size_t j = i + 1;
    if (j >= doc.size() || !is_name_start(doc[j])) return "bad '<'" + where(i);
    while (j < doc.size() && is_name_char(doc[j])) ++j;
    const std::string name = doc.substr(i + 1, j - i - 1);
    std::set<std::string> attributes;
    bool self_closing = false;
    for (;;) {
      const std::size_t before = j;
      while (j < doc.size() && std::isspace(static_cast<unsigned char>(doc[j]))) ++j;
      if (j >= doc.size()) return "unterminated tag <" + name + ">" + where(i);
      if (doc[j] == '>') break;
      if (doc.compare(j, 2, "/>") == 0) {
        self_closing = true;
        ++j;
        break;
      }
      if (j == before) return "missing space between attributes in <" + name + ">" + where(j);
      if (!is_name_start(doc[j])) return "bad attribute in <" + name + ">" + where(j);
      std::size_t k = j;
      while (k < doc.size() && is_name_char(doc[k])) ++k;
      const std::string attribute = doc.substr(j, k - j);
      if (!attributes.insert(attribute).second) return "duplicate attribute " + attribute + where(j);
      if (k >= doc.size() || doc[k] != '=') return "attribute without value: " + attribute + where(j);
      ++k;
      if (k >= doc.size() || (doc[k] != '"' && doc[k] != '\'')) return "unquoted attribute " + attribute + where(j);
      const char quote = doc[k];
      const auto end = doc.find(quote, k + 1);
      if (end == std::string::npos) return "unterminated attribute value" + where(k);
      for (std::size_t v = k + 1; v < end; ++v) {
        if (doc[v] == '<') return "'<' in attribute value" + where(v);
        if (doc[v] == '&')
          if (auto e = check_reference(v); !e.empty()) return e;
      }
      j = end + 1;
    }
    if (stack.empty()) {
      if (++roots > 1) return "second root element <" + name + ">" + where(i);
    }
    if (!self_closing) stack.push_back(name);
    i = j + 1;
  }
  if (!stack.empty()) return "unclosed element <" + stack.back() + ">";
  if (roots != 1) return "no root element";
  return "";
}

std::filesystem::path temp_dir(const std::string& tag) {
  auto dir = std::filesystem::temp_directory_path() /
             ("deltaedit-report-" + tag + "-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
              std::to_string(reinterpret_cast<std::uintptr_t>(&tag)));
  std::filesystem::create_directories(dir);
  return dir;
}

void expect_ticks(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12 * std::max(1.0, std::fabs(want[i])));
}

// The value of attribute `name` in the first element after `from` that has it.
std::string attribute_after(const std::string& doc, std::size_t from, const std::string& name) {
  const auto p = doc.find(" " + name + "=\"", from);
  if (p == std::string::npos) return "";
  const auto start = p + name.size() + 3;
  return doc.substr(start, doc.find('"', start) - start);
}

}  // namespace

// ---------------------------------------------------------------- ticks

TEST(NiceTicks, Steps) {
  EXPECT_DOUBLE_EQ(dr::nice_step(0.16), 0.2);
  EXPECT_DOUBLE_EQ(dr::nice_step(3.0), 5.0);
  EXPECT_DOUBLE_EQ(dr::nice_step(7.0), 10.0);
  EXPECT_DOUBLE_EQ(dr::nice_step(1.0), 1.0);
  EXPECT_NEAR(dr::nice_step(1.5e-5), 2e-5, 1e-20);
  EXPECT_DOUBLE_EQ(dr::nice_step(0.0), 1.0);
  EXPECT_DOUBLE_EQ(dr::nice_step(kNaN), 1.0);
}

TEST(NiceTicks, Ranges) {
  expect_ticks(dr::nice_ticks(0.0, 1.0), {0.0, 0.2, 0.4, 0.6, 0.8, 1.0});
  expect_ticks(dr::nice_ticks(0.1, 0.9), {0.0, 0.2, 0.4, 0.6, 0.8, 1.0});
  expect_ticks(dr::nice_ticks(74.2, 76.4), {74.0, 74.5, 75.0, 75.5, 76.0, 76.5});
  expect_ticks(dr::nice_ticks(-1.0, 0.8), {-1.0, -0.5, 0.0, 0.5, 1.0});
  expect_ticks(dr::nice_ticks(0.3, 0.6), {0.3, 0.4, 0.5, 0.6});  // exact multiples add no extra tick
  expect_ticks(dr::nice_ticks(0.0, 1e9), {0.0, 2e8, 4e8, 6e8, 8e8, 1e9});
  expect_ticks(dr::nice_ticks(1.0, 0.0), {0.0, 0.2, 0.4, 0.6, 0.8, 1.0});  // reversed
  expect_ticks(dr::nice_ticks(0.0, 0.0), {-1.0, -0.5, 0.0, 0.5, 1.0});     // degenerate
  expect_ticks(dr::nice_ticks(5.0, 5.0), {4.4, 4.6, 4.8, 5.0, 5.2, 5.4, 5.6});
  expect_ticks(dr::nice_ticks(-3e-6, 7e-6), {-4e-6, -2e-6, 0.0, 2e-6, 4e-6, 6e-6, 8e-6});
  EXPECT_TRUE(dr::nice_ticks(kNaN, 1.0).empty());
  EXPECT_TRUE(dr::nice_ticks(0.0, kInf).empty());
  // Always covers the range with few ticks.
  for (double lo : {-123.4, -0.01, 0.0, 3.7, 1e5}) {
    for (double span : {1e-3, 0.7, 42.0, 9e6}) {
      const auto t = dr::nice_ticks(lo, lo + span);
      ASSERT_GE(t.size(), 2u);
      EXPECT_LE(t.front(), lo);
      EXPECT_GE(t.back(), lo + span);
      EXPECT_LE(t.size(), 13u);
    }
  }
}

TEST(NiceTicks, LogAndSymlog) {
  expect_ticks(dr::log_ticks(1e-3, 100.0), {1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0});
  expect_ticks(dr::log_ticks(1.0, 10.0), {1.0, 2.0, 5.0, 10.0});
  EXPECT_LE(dr::log_ticks(1e-20, 1e20).size(), 9u);
  EXPECT_TRUE(dr::log_ticks(0.0, 10.0).empty());
  expect_ticks(dr::symlog_ticks(-100.0, 100.0, 1.0), {-100.0, -10.0, -1.0, 0.0, 1.0, 10.0, 100.0});
  expect_ticks(dr::symlog_ticks(0.0, 0.05, 0.01), {0.0, 0.01});
  // Over more than four decades in all, ±w (0.3 decades from 0) is left unlabelled: its label
  // would touch 0's.
  expect_ticks(dr::symlog_ticks(-1.0, 1000.0, 0.01), {-1.0, -0.1, 0.0, 0.1, 10.0, 1000.0});
  expect_ticks(dr::symlog_ticks(-0.01, 100.0, 1e-4), {-0.01, -0.001, 0.0, 0.01, 1.0, 100.0});
  expect_ticks(dr::symlog_ticks(-0.5, 0.0, 1.0), {0.0});
}

TEST(NiceTicks, Labels) {
  EXPECT_EQ(dr::tick_label(0.2, 0.2), "0.2");
  EXPECT_EQ(dr::tick_label(1.0, 0.5), "1.0");
  EXPECT_EQ(dr::tick_label(74.5, 0.5), "74.5");
  EXPECT_EQ(dr::tick_label(3 * 0.1 - 0.3, 0.1), "0");
  EXPECT_EQ(dr::tick_label(-0.4, 0.2), "-0.4");
  EXPECT_EQ(dr::tick_label(200.0, 50.0), "200");
  EXPECT_EQ(dr::tick_label(2e-5, 1e-5), "2e-5");
  EXPECT_EQ(dr::tick_label(2.5e-5, 5e-6), "2.5e-5");
  EXPECT_EQ(dr::tick_label(2e6, 1e6), "2e6");
  EXPECT_EQ(dr::tick_label(1000.0, 0.0), "1000");
  EXPECT_EQ(dr::tick_label(1e-5, 0.0), "1e-5");
  EXPECT_EQ(dr::tick_label(1e7, 0.0), "1e7");
  EXPECT_EQ(dr::tick_label(kNaN, 1.0), "");
}

// ---------------------------------------------------------------- escaping

TEST(Svg, XmlEscape) {
  EXPECT_EQ(dr::xml_escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
  EXPECT_EQ(dr::xml_escape("plain text"), "plain text");
  EXPECT_EQ(dr::xml_escape("\xce\x94L \xe2\x89\xa5 0"), "\xce\x94L \xe2\x89\xa5 0");  // ΔL ≥ 0 kept
  EXPECT_EQ(dr::xml_escape(std::string("a\x01z")), "a\xef\xbf\xbdz");
  EXPECT_EQ(dr::xml_escape(std::string("a\xffz")), "a\xef\xbf\xbdz");
  EXPECT_EQ(dr::xml_escape(std::string("\xc0\xaf")), "\xef\xbf\xbd\xef\xbf\xbd");  // overlong
  EXPECT_EQ(dr::xml_escape(std::string("\xed\xa0\x80")), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // surrogate
  EXPECT_EQ(dr::xml_escape(std::string("\xe2\x89")), "\xef\xbf\xbd\xef\xbf\xbd");  // truncated
  EXPECT_EQ(dr::xml_escape("tab\tnewline\n"), "tab\tnewline\n");
}

TEST(Svg, HostileSeriesNameRendersSafely) {
  dr::ChartOptions opt;
  opt.title = "T1 <accuracy> & \"loss\"";
  opt.x_title = "k";
  opt.y_title = "accuracy";
  std::vector<dr::Series> series = {{"<b>&\"", {0.5, 0.7, 0.9}, {75.4, 76.0, 76.4}, {}, false},
                                    {"</svg><script>x</script>", {0.5, 0.7}, {74.2, 76.0}, {}, false}};
  const std::string svg = dr::line_chart(opt, series);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find("&lt;b&gt;&amp;&quot;"), std::string::npos);
  EXPECT_EQ(svg.find("<b>"), std::string::npos);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(count(svg, "</svg>"), 2u);  // the chart and its plot viewport, nothing injected
  EXPECT_NE(svg.find("<title>T1 &lt;accuracy&gt; &amp; &quot;loss&quot;</title>"), std::string::npos);
}

// ---------------------------------------------------------------- charts

TEST(Svg, LineChartSeriesPointsAndNaN) {
  dr::ChartOptions opt;
  opt.title = "F1: accuracy vs p";
  std::vector<dr::Series> series;
  const std::vector<double> p = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
  for (double k : {-1.0, -0.5, 0.0, 0.5, 0.8}) {
    dr::Series s;
    s.name = "k=" + dr::format_number(k);
    s.x = p;
    for (double pi : p) s.y.push_back(0.75 - 0.1 * k * pi);
    series.push_back(s);
  }
  series[2].y[4] = kNaN;  // one missing measurement
  const std::string svg = dr::line_chart(opt, series);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find("data-series=\"5\""), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"series\""), 5u);
  EXPECT_EQ(count(svg, "class=\"point\""), 5u * 9u - 1u);
  EXPECT_EQ(count(svg, "data-points=\"9\""), 4u);
  EXPECT_EQ(count(svg, "data-points=\"8\""), 1u);
  EXPECT_EQ(count(svg, "class=\"legend-item\""), 5u);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("width=\"640\""), std::string::npos);
  // The NaN breaks the third series' line into two pieces.
  const auto third = svg.find("data-name=\"k=0\"");
  ASSERT_NE(third, std::string::npos);
  const std::string d = attribute_after(svg, third, "d");
  EXPECT_EQ(count(d, "M"), 2u);
  EXPECT_EQ(count(d, "L"), 6u);
}

TEST(Svg, ReferenceLinesAreDrawnAndWidenTheRange) {
  dr::ChartOptions opt;
  opt.title = "T1";
  std::vector<dr::Series> series = {{"random", {0.5, 1.0, 1.5}, {0.2, 0.4, 0.3}, {}, false}};
  std::vector<dr::RefLine> refs = {{5.0, "post", false, {}}, {-1.0, "base", false, "#aa0000"}};
  const std::string svg = dr::line_chart(opt, series, refs);
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(count(svg, "class=\"refline\""), 2u);
  EXPECT_NE(svg.find(">post</text>"), std::string::npos);
  EXPECT_NE(svg.find(">base</text>"), std::string::npos);
  EXPECT_NE(svg.find(">6</text>"), std::string::npos);  // y ticks (step 2) reach both reference lines
  EXPECT_NE(svg.find(">-2</text>"), std::string::npos);
  // Both lines lie inside the plot area.
  const auto plot = svg.find("class=\"plot\"");
  const double plot_h = std::stod(attribute_after(svg, plot, "height"));
  for (auto p = svg.find("class=\"refline\""); p != std::string::npos; p = svg.find("class=\"refline\"", p + 1)) {
    const double y = std::stod(attribute_after(svg, p, "y1"));
    EXPECT_GE(y, 0.0);
    EXPECT_LE(y, plot_h);
  }
}

TEST(Svg, ScatterWithIdentityLine) {
  dr::ChartOptions opt;
  opt.title = "approximation term vs true loss change";
  opt.identity_line = true;
  dr::Series s{"edits", {-0.01, 0.02, 0.05, kNaN, 0.1}, {-0.012, 0.018, 0.06, 0.02, kInf}, {}, false};
  const std::string svg = dr::scatter_chart(opt, {s});
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(count(svg, "class=\"point\""), 3u);
  EXPECT_EQ(count(svg, "class=\"identity\""), 1u);
  EXPECT_EQ(count(svg, "class=\"line\""), 0u);
}

// Both axes symmetric-log: small x values spread out (linear within ±w), large ones are
// compressed by decade, and y = x stays a straight line because both axes share the transform.
TEST(Svg, ScatterOnSymlogAxes) {
  dr::ChartOptions opt;
  opt.title = "term against ΔL";
  opt.identity_line = true;
  opt.y_scale = dr::Scale::SymLog;
  opt.symlog_width = 0.01;
  const std::vector<double> xs = {-50.0, -0.005, 0.0, 0.003, 0.008, 80.0};
  dr::Series s{"edits", xs, xs, {}, false};
  const auto cxs = [](const std::string& svg) {
    std::vector<double> v;
    for (auto p = svg.find("class=\"point\""); p != std::string::npos;
         p = svg.find("class=\"point\"", p + 1))
      v.push_back(std::stod(attribute_after(svg, p, "cx")));
    return v;
  };
  // Only y symlog: x is linear over [-50, 80], so 0.003 and 0.008 are within a pixel; no y = x.
  const std::string y_only = dr::scatter_chart(opt, {s});
  EXPECT_EQ(xml_problem(y_only), "");
  EXPECT_EQ(count(y_only, "class=\"identity\""), 0u);
  const std::vector<double> lin = cxs(y_only);
  ASSERT_EQ(lin.size(), xs.size());
  EXPECT_LT(lin[4] - lin[3], 1.0);

  opt.x_scale = dr::Scale::SymLog;
  const std::string both = dr::scatter_chart(opt, {s});
  EXPECT_EQ(xml_problem(both), "");
  EXPECT_EQ(count(both, "class=\"identity\""), 1u);
  const std::vector<double> sym = cxs(both);
  ASSERT_EQ(sym.size(), xs.size());
  // Positions follow sign(x)·log10(1 + |x|/w): increasing, and 0.003 → 0.008 spans
  // (log10 1.8 − log10 1.3) of the (log10 8001 + log10 5001) decades from −50 to 80.
  for (size_t i = 1; i < sym.size(); ++i) EXPECT_GT(sym[i], sym[i - 1]);
  const double span = sym.back() - sym.front();
  const double expect =
      (std::log10(1.8) - std::log10(1.3)) / (std::log10(8001.0) + std::log10(5001.0));
  EXPECT_GT((sym[4] - sym[3]) / span, 0.9 * expect);
  EXPECT_GT(sym[4] - sym[3], 5.0);
  // The x axis is labelled by decades too: −w·10^4 = −100 (the y axis has it in both charts).
  EXPECT_EQ(count(both, ">-100</text>"), count(y_only, ">-100</text>") + 1);
}

TEST(Svg, GroupedBarsSkipNaN) {
  dr::ChartOptions opt;
  opt.title = "F4: multi-bit BitDelta";
  const std::vector<std::string> cats = {"0 bits", "1 bit", "2 bits"};
  std::vector<dr::ValueSeries> series = {{"accuracy", {0.1, 0.7, 0.75}, {}}, {"loss", {2.0, kNaN, -0.5}, {}}};
  const std::string svg = dr::bar_chart(opt, cats, series, {{0.76, "post", false, {}}});
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_NE(svg.find("data-series=\"2\""), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"series\""), 2u);
  EXPECT_EQ(count(svg, "class=\"bar\""), 5u);
  EXPECT_EQ(count(svg, "class=\"refline\""), 1u);
  EXPECT_NE(svg.find(">2 bits</text>"), std::string::npos);
  EXPECT_NE(svg.find(">-0.5</text>"), std::string::npos);  // range includes the negative bar

  // Long category names keep their start and end, with the full name as a tooltip.
  const std::string tensors = dr::bar_chart(opt, {"model.layers.0.self_attn.q_proj.weight", "lm_head.weight"},
                                            {{"norm", {1.0, 2.0}, {}}});
  EXPECT_EQ(xml_problem(tensors), "");
  EXPECT_NE(tensors.find("<title>model.layers.0.self_attn.q_proj.weight</title>model.lay\xe2\x80\xa6" "attn.q_proj.weight"),
            std::string::npos);
  EXPECT_NE(tensors.find(">lm_head.weight</text>"), std::string::npos);
}

TEST(Svg, HistogramCountsAndLogAxis) {
  dr::ChartOptions opt;
  opt.title = "F3: per-tensor contributions";
  opt.histogram_bins = 10;
  std::vector<double> a, b;
  for (int i = 0; i < 100; ++i) a.push_back(i);
  b = {1.0, 2.0, kNaN, 95.0};
  const std::string svg = dr::histogram_chart(opt, {{"DARE p=0.5", a, {}}, {"magnitude", b, {}}}, {{50.0, "mean", true, {}}});
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(count(svg, "class=\"series\""), 2u);
  EXPECT_EQ(count(svg, "class=\"bar\""), 10u + 2u);  // b fills two bins
  EXPECT_NE(svg.find("data-samples=\"100\""), std::string::npos);
  EXPECT_NE(svg.find("data-samples=\"3\""), std::string::npos);
  EXPECT_NE(svg.find(">count</text>"), std::string::npos);
  EXPECT_EQ(count(svg, "class=\"refline\""), 1u);

  opt.y_scale = dr::Scale::Log;
  const std::string log_svg = dr::histogram_chart(opt, {{"x", {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 9}, {}}});
  EXPECT_EQ(xml_problem(log_svg), "");
  EXPECT_EQ(count(log_svg, "class=\"bar\""), 2u);
}

TEST(Svg, LogAndSymlogAxes) {
  dr::ChartOptions opt;
  opt.title = "log";
  opt.y_scale = dr::Scale::Log;
  dr::Series s{"loss", {1, 2, 3, 4, 5}, {0.001, 0.0, 10.0, -1.0, 1000.0}, {}, false};
  const std::string svg = dr::line_chart(opt, {s});
  EXPECT_EQ(xml_problem(svg), "");
  EXPECT_EQ(count(svg, "class=\"point\""), 3u);  // 0 and -1 cannot be drawn on a log axis
  EXPECT_NE(svg.find(">0.001</text>"), std::string::npos);
  EXPECT_NE(svg.find(">1000</text>"), std::string::npos);

  opt.y_scale = dr::Scale::SymLog;
  opt.symlog_width = 0.01;
  const std::string sym = dr::line_chart(opt, {s});
  EXPECT_EQ(xml_problem(sym), "");
  EXPECT_EQ(count(sym, "class=\"point\""), 5u);
  EXPECT_NE(sym.find(">-1</text>"), std::string::npos);
  EXPECT_NE(sym.find(">1000</text>"), std::string::npos);  // the outermost decade is labelled
  EXPECT_NE(sym.find(">0</text>"), std::string::npos);
}

TEST(Svg, EmptyAndFixedRanges) {
  dr::ChartOptions opt;
  const std::string empty = dr::line_chart(opt, {});
  EXPECT_EQ(xml_problem(empty), "");
  EXPECT_NE(empty.find("data-series=\"0\""), std::string::npos);
  EXPECT_NE(empty.find("<title>chart</title>"), std::string::npos);

  opt.y_min = 0.0;
  opt.y_max = 1.0;
  dr::Series s{"", {0, 1}, {kNaN, kNaN}, {}, false};
  const std::string fixed = dr::line_chart(opt, {s});
  EXPECT_EQ(xml_problem(fixed), "");
  EXPECT_NE(fixed.find("data-points=\"0\""), std::string::npos);
  EXPECT_EQ(count(fixed, "class=\"legend\""), 0u);  // unnamed series: no legend
  EXPECT_NE(fixed.find(">0.8</text>"), std::string::npos);
}

// ---------------------------------------------------------------- numbers and CSV

TEST(Cells, NumberFormatting) {
  EXPECT_EQ(dr::format_number(0.754321), "0.7543");
  EXPECT_EQ(dr::format_number(75.4), "75.4");
  EXPECT_EQ(dr::format_number(2.0), "2");
  EXPECT_EQ(dr::format_number(-0.0), "0");
  EXPECT_EQ(dr::format_number(1.5e-5), "1.5e-5");
  EXPECT_EQ(dr::format_number(123456789.0), "1.235e8");
  EXPECT_EQ(dr::format_number(kNaN), "NaN");
  EXPECT_EQ(dr::format_number(-kInf), "-inf");
  EXPECT_EQ(dr::format_fixed(0.5, 2), "0.50");
  EXPECT_EQ(dr::format_fixed(-0.001, 2), "0.00");
  EXPECT_EQ(dr::format_exact(0.1), "0.1");
  EXPECT_EQ(dr::Cell(1234567).display(), "1,234,567");
  EXPECT_EQ(dr::Cell(-1234).display(), "-1234");
  EXPECT_EQ(dr::Cell(std::uint64_t{8030261248ULL}).display(), "8,030,261,248");
  EXPECT_EQ(dr::Cell::percent(0.754).display(), "75.4%");
  EXPECT_EQ(dr::Cell::percent(0.754).raw(), "0.754");
  EXPECT_EQ(dr::Cell::fixed(2.0, 3).display(), "2.000");
  EXPECT_EQ(dr::Cell::number(3.14159265, 2).display(), "3.1");
  EXPECT_EQ(dr::Cell("text").display(), "text");
  EXPECT_EQ(dr::Cell(true).display(), "true");
  EXPECT_TRUE(dr::Cell(1.0f).is_number());
  EXPECT_FALSE(dr::Cell("1").is_number());
  EXPECT_EQ(dr::Cell().display(), "");
}

TEST(Csv, QuotingPerRfc4180) {
  EXPECT_EQ(dr::csv_field("plain"), "plain");
  EXPECT_EQ(dr::csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(dr::csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(dr::csv_field("two\nlines"), "\"two\nlines\"");
  EXPECT_EQ(dr::csv_field("cr\r"), "\"cr\r\"");
  EXPECT_EQ(dr::csv_field(" padded"), "\" padded\"");
  EXPECT_EQ(dr::csv_field(""), "");
  const std::string csv = dr::to_csv({"method", "p", "accuracy", "n"},
                                     {{"dare, rescaled", 0.1, 0.7543219876, 1319}, {"say \"x\"", 1e-5, kNaN, -2}, {"short"}});
  EXPECT_EQ(csv,
            "method,p,accuracy,n\r\n"
            "\"dare, rescaled\",0.1,0.7543219876,1319\r\n"
            "\"say \"\"x\"\"\",1e-05,nan,-2\r\n"
            "short\r\n");

  const auto dir = temp_dir("csv");
  dr::write_csv(dir / "t.csv", {"a"}, {{1}});
  std::ifstream f(dir / "t.csv", std::ios::binary);
  const std::string back((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(back, "a\r\n1\r\n");
  std::filesystem::remove_all(dir);
  EXPECT_THROW(dr::write_csv("/nonexistent-dir/x.csv", {"a"}, {}), std::runtime_error);
}

// ---------------------------------------------------------------- correlation

TEST(Correlation, PerfectAndAnti) {
  const std::vector<double> x = {1, 2, 3, 4};
  const std::vector<double> y = {2, 4, 6, 8};
  const std::vector<double> z = {8, 6, 4, 2};
  EXPECT_NEAR(dr::pearson(x, y), 1.0, 1e-15);
  EXPECT_NEAR(dr::spearman(x, y), 1.0, 1e-15);
  EXPECT_NEAR(dr::pearson(x, z), -1.0, 1e-15);
  EXPECT_NEAR(dr::spearman(x, z), -1.0, 1e-15);
  EXPECT_DOUBLE_EQ(dr::sign_agreement(x, y), 1.0);
  // Monotone but not linear: Spearman 1, Pearson below 1.
  const std::vector<double> cube = {1, 8, 27, 64};
  EXPECT_NEAR(dr::spearman(x, cube), 1.0, 1e-15);
  EXPECT_LT(dr::pearson(x, cube), 0.99);
}

TEST(Correlation, HandComputed) {
  // dx = (-2,-1,0,1,2), dy = (-1,-2,1,0,2): Sxy = 8, Sxx = Syy = 10 -> r = 0.8.
  const std::vector<double> x = {1, 2, 3, 4, 5};
  const std::vector<double> y = {2, 1, 4, 3, 5};
  EXPECT_NEAR(dr::pearson(x, y), 0.8, 1e-15);
  EXPECT_NEAR(dr::spearman(x, y), 0.8, 1e-15);
}

TEST(Correlation, SpearmanWithTies) {
  EXPECT_EQ(dr::average_ranks(std::vector<double>{10, 20, 20, 30}), (std::vector<double>{1, 2.5, 2.5, 4}));
  EXPECT_EQ(dr::average_ranks(std::vector<double>{3, 1, 3, 3}), (std::vector<double>{3, 1, 3, 3}));
  // ranks x = (1, 2.5, 2.5, 4), ranks y = (1, 3, 2, 4): Sxy = 4.5, Sxx = 4.5, Syy = 5.
  const std::vector<double> x = {1, 2, 2, 3};
  const std::vector<double> y = {1, 3, 2, 4};
  EXPECT_NEAR(dr::spearman(x, y), 4.5 / std::sqrt(4.5 * 5.0), 1e-15);
}

TEST(Correlation, NonFiniteAndDegenerate) {
  const std::vector<double> x = {1, 2, 2, 3, kNaN, 7};
  const std::vector<double> y = {1, 3, 2, 4, 5, kInf};
  const auto a = dr::agreement(x, y);
  EXPECT_NEAR(a.spearman, 4.5 / std::sqrt(22.5), 1e-15);
  EXPECT_EQ(a.used, 4u);
  EXPECT_EQ(a.dropped, 2u);
  EXPECT_DOUBLE_EQ(a.sign_agreement, 1.0);
  EXPECT_TRUE(std::isnan(dr::pearson(std::vector<double>{1, 1, 1}, std::vector<double>{1, 2, 3})));
  EXPECT_TRUE(std::isnan(dr::spearman(std::vector<double>{1}, std::vector<double>{1})));
  EXPECT_TRUE(std::isnan(dr::sign_agreement(std::vector<double>{kNaN}, std::vector<double>{1})));
  EXPECT_THROW(dr::pearson(std::vector<double>{1, 2}, std::vector<double>{1}), std::invalid_argument);
  // Signs in {-1, 0, +1}: (+,+) (-,-) (0,0) agree, (+,-) does not.
  EXPECT_DOUBLE_EQ(dr::sign_agreement(std::vector<double>{1, -1, 0, 2}, std::vector<double>{3, -2, 0, -1}), 0.75);
}

// ---------------------------------------------------------------- HTML

namespace {

dr::Report sample_report() {
  dr::ChartOptions opt;
  opt.title = "accuracy vs k";
  dr::Report r("deltaedit <report> & checks");
  r.add_summary("model", "tiny-llama").add_summary("parameters", 1234567).add_summary("post accuracy",
                                                                                    dr::Cell::percent(0.754));
  r.add_summary_text("All numbers from one run.");
  r.add_section("T1: random vs biased");
  r.add_paragraph("Biased by delta \xc2\xb7 gradient collapses <accuracy> & loss.");
  r.add_table({"k", "random", "by delta"}, {{0.5, 0.754321, 0.742}, {1.5, kNaN, "n/a"}}, "accuracy");
  r.add_chart(dr::line_chart(opt, {{"random", {0.5, 1.5}, {0.754, 0.76}, {}, false}}), "T1 chart");
  r.add_section("Claims");
  r.add_subsection("summary");
  r.add_preformatted("deltaedit sweep --exp T1 --seed 1 > out.json");
  r.add_claims({{"T1", "random 75.4\xe2\x80\x93" "76.4%", "75.9%", "reproduced", dr::Verdict::Supported},
                {"T1", "biased by delta\xc2\xb7grad 0\xe2\x80\x93" "26.8%", "31%", "partly <reproduced>", dr::Verdict::Partial},
                {"F4", "x", "y", "no", dr::Verdict::NotSupported}});
  r.set_footer("deltaedit 0.1.0");
  return r;
}

}  // namespace

TEST(Html, SelfContainedAndEscaped) {
  const std::string html = sample_report().render();
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* external : {"src=\"http", "src='http", "href=\"http", "href=\"//", "<script", "<link", "url(",
                               "@import", "<iframe", "<img"})
    EXPECT_EQ(html.find(external), std::string::npos) << external;
  EXPECT_NE(html.find("<title>deltaedit &lt;report&gt; &amp; checks</title>"), std::string::npos);
  EXPECT_NE(html.find("collapses &lt;accuracy&gt; &amp; loss"), std::string::npos);
  EXPECT_NE(html.find("<td class=\"num\">0.7543</td>"), std::string::npos);
  EXPECT_NE(html.find("<td class=\"num\">NaN</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>n/a</td>"), std::string::npos);
  EXPECT_NE(html.find("<dd>1,234,567</dd>"), std::string::npos);
  EXPECT_NE(html.find("<dd>75.4%</dd>"), std::string::npos);
  EXPECT_NE(html.find("<caption>accuracy</caption>"), std::string::npos);
  EXPECT_NE(html.find("<th scope=\"col\">Paper's claim</th>"), std::string::npos);
  EXPECT_NE(html.find("verdict-supported\">reproduced</td>"), std::string::npos);
  EXPECT_NE(html.find("partly &lt;reproduced&gt;"), std::string::npos);
  EXPECT_NE(html.find("<a href=\"#s2\">Claims</a>"), std::string::npos);
  EXPECT_NE(html.find("<section id=\"s2\">"), std::string::npos);
  EXPECT_NE(html.find("<footer>deltaedit 0.1.0</footer>"), std::string::npos);
  EXPECT_EQ(count(html, "class=\"chart\""), 1u);
  EXPECT_NE(html.find("<figcaption>T1 chart</figcaption>"), std::string::npos);
}

TEST(Html, WellFormed) {
  const std::string html = sample_report().render();
  EXPECT_EQ(xml_problem(html), "");
  // The checker itself rejects broken documents.
  EXPECT_NE(xml_problem("<a><b></a></b>"), "");
  EXPECT_NE(xml_problem("<a x=1></a>"), "");
  EXPECT_NE(xml_problem("<a>&nbsp;</a>"), "");
  EXPECT_NE(xml_problem("<a></a><b></b>"), "");
  EXPECT_NE(xml_problem("<a x=\"1\" x=\"2\"></a>"), "");
  EXPECT_EQ(xml_problem("<!DOCTYPE a>\n<a y='&#x3c;'><!-- c --><b/>t &amp; &#39;</a>\n"), "");

  // Optional second opinion from libxml2 when it is installed.
  if (std::system("command -v xmllint >/dev/null 2>&1") != 0) GTEST_SKIP() << "xmllint not installed; own check only";
  const auto dir = temp_dir("xml");
  const auto file = dir / "index.html";
  sample_report().write(file);
  const std::string cmd = "xmllint --noout --nonet '" + file.string() + "' 2>'" + (dir / "err.txt").string() + "'";
  const int rc = std::system(cmd.c_str());
  std::ifstream err(dir / "err.txt");
  const std::string message((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << message;
  std::filesystem::remove_all(dir);
}

TEST(Html, EmptyReport) {
  const std::string html = dr::Report("empty").render();
  EXPECT_EQ(xml_problem(html), "");
  EXPECT_EQ(html.find("<nav"), std::string::npos);
  EXPECT_NE(html.find("<footer>Generated by deltaedit.</footer>"), std::string::npos);
  EXPECT_THROW(dr::Report("x").write("/nonexistent-dir/index.html"), std::runtime_error);
}
