// Self-contained SVG charts for the HTML report: line, scatter, grouped bar and
// histogram charts with legends, "nice" axis ticks, linear / log / symmetric-log
// y axes and labelled reference lines.
//
// Every chart is one <svg class="chart"> element with a <title>, a
// data-series="N" attribute and one <g class="series"> per series (each with
// data-points="M", the number of points, bars or bins it drew). All text is
// XML-escaped, non-finite values are skipped, and no ids are used, so any
// number of charts can be inlined into one document.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace deltaedit::report {

enum class Scale {
  Linear,
  Log,     // values <= 0 are not drawn
  SymLog,  // sign(v)·log10(1 + |v|/w): linear near zero, logarithmic beyond w
};

// A line or scatter series: points (x[i], y[i]); points with a non-finite
// coordinate (or y <= 0 on a log axis) are skipped and break the line.
struct Series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;
  std::string color;  // any CSS colour; empty = palette colour of the series index
  bool dashed = false;
};

// Bar chart: values[i] belongs to category i. Histogram: the samples.
struct ValueSeries {
  std::string name;
  std::vector<double> values;
  std::string color;
};

// A labelled reference line, e.g. "base" and "post" accuracy. Horizontal lines
// are at y = value, vertical ones at x = value (line/scatter/histogram only).
// Automatic axis ranges include them.
struct RefLine {
  double value = 0.0;
  std::string label;
  bool vertical = false;
  std::string color;  // empty = dark grey
};

struct ChartOptions {
  std::string title;
  std::string x_title;
  std::string y_title;
  int width = 640;
  int height = 400;
  Scale y_scale = Scale::Linear;
  Scale x_scale = Scale::Linear;  // line and scatter charts
  double symlog_width = 1.0;      // w of Scale::SymLog (either axis); must be > 0
  std::optional<double> x_min, x_max, y_min, y_max;  // fixed ranges; otherwise automatic
  bool markers = true;          // line charts: a marker at every point
  bool identity_line = false;   // line/scatter: also draw y = x (dotted; both axes on one scale)
  int histogram_bins = 0;       // 0 = automatic
};

std::string line_chart(const ChartOptions& options, const std::vector<Series>& series,
                       const std::vector<RefLine>& refs = {});
std::string scatter_chart(const ChartOptions& options, const std::vector<Series>& series,
                          const std::vector<RefLine>& refs = {});
// Grouped bars: one group per category, one bar per series in each group.
std::string bar_chart(const ChartOptions& options, const std::vector<std::string>& categories,
                      const std::vector<ValueSeries>& series, const std::vector<RefLine>& refs = {});
// Histograms of the samples of each series over shared bins (overlaid, translucent).
std::string histogram_chart(const ChartOptions& options, const std::vector<ValueSeries>& series,
                            const std::vector<RefLine>& refs = {});

// ---- building blocks (exposed for tests and custom charts) ----

// Nice step for a raw step: 1, 2 or 5 times a power of ten, >= raw.
double nice_step(double raw_step);
// Ticks at multiples of a nice step covering [lo, hi]: the first tick is <= lo and
// the last >= hi, about `target` intervals. lo == hi is widened; non-finite gives {}.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);
// Powers of ten covering [lo, hi] (lo > 0), thinned to at most ~8; within a
// single decade 2 and 5 multiples are added.
std::vector<double> log_ticks(double lo, double hi);
// Ticks for a symmetric-log axis over [lo, hi]: 0 and ±w·10^k inside the range.
std::vector<double> symlog_ticks(double lo, double hi, double width);
// Tick label for `value` on an axis whose tick spacing is `step` (step <= 0: generic).
std::string tick_label(double value, double step);
// Escapes & < > " ' and replaces characters XML cannot hold (control
// characters, malformed UTF-8) with U+FFFD.
std::string xml_escape(std::string_view text);

}  // namespace deltaedit::report
