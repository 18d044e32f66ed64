#include "report/svg.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>

#include <fmt/format.h>

#include "report/cell.h"

namespace deltaedit::report {
namespace {

constexpr std::array<const char*, 10> kPalette = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                                  "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                                                  "#9c755f", "#7f7f7f"};
constexpr double kCharWidth = 6.8;  // rough width of one character at font-size 12

std::string series_color(const std::string& requested, std::size_t index) {
  return requested.empty() ? kPalette[index % kPalette.size()] : requested;
}

// Pixel coordinate with at most two decimals.
std::string px(double v) {
  std::string s = fmt::format("{:.2f}", v);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  if (s == "-0") s = "0";
  return s;
}

// Number of code points, for text width estimates.
std::size_t text_length(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// At most `max_chars` code points; longer text ends in an ellipsis.
std::string shorten(const std::string& s, std::size_t max_chars) {
  if (text_length(s) <= max_chars) return s;
  std::size_t chars = 0, i = 0;
  for (; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) {
      if (chars == max_chars - 1) break;
      ++chars;
    }
  }
  return s.substr(0, i) + "\u2026";
}

// At most `max_chars` code points, keeping the start and the end ("model.lay…proj.weight").
std::string shorten_middle(const std::string& s, std::size_t max_chars) {
  const std::size_t n = text_length(s);
  if (n <= max_chars || max_chars < 3) return s;
  const std::size_t head = (max_chars - 1) / 3, tail = max_chars - 1 - head;  // the end tells more
  std::size_t chars = 0, cut_head = s.size(), cut_tail = s.size();
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (chars == head) cut_head = std::min(cut_head, i);
    if (chars == n - tail) {
      cut_tail = i;
      break;
    }
    ++chars;
  }
  return s.substr(0, cut_head) + "\u2026" + s.substr(cut_tail);
}

double symlog(double v, double w) { return std::copysign(std::log10(1.0 + std::fabs(v) / w), v); }

// One axis: scale, range and ticks.
struct Axis {
  Scale scale = Scale::Linear;
  double lo = 0.0, hi = 1.0;
  double width = 1.0;  // symlog w
  double step = 0.0;   // tick spacing for labels; 0 = generic labels
  std::vector<double> ticks;

  double transform(double v) const {
    switch (scale) {
      case Scale::Linear: return v;
      case Scale::Log: return std::log10(v);
      case Scale::SymLog: return symlog(v, width);
    }
    return v;
  }
  bool drawable(double v) const { return std::isfinite(v) && (scale != Scale::Log || v > 0.0); }
  // Position of v in [0, 1] over the range (may fall outside for values off range).
  double fraction(double v) const {
    const double a = transform(lo), b = transform(hi);
    return b == a ? 0.5 : (transform(v) - a) / (b - a);
  }
};

std::vector<double> within(const std::vector<double>& ticks, double lo, double hi) {
  std::vector<double> out;
  const double scale = std::max({std::fabs(lo), std::fabs(hi), hi - lo, 1e-300});
  for (double t : ticks)
    if (t >= lo - 1e-9 * scale && t <= hi + 1e-9 * scale) out.push_back(t);
  return out;
}

double next_symlog_tick(double v, double w) {
  // Smallest w·10^k >= v (v > 0).
  if (v <= w) return w;
  const double k = std::ceil(std::log10(v / w) - 1e-9);
  return w * std::pow(10.0, k);
}

Axis make_axis(const std::vector<double>& values, Scale scale, double symlog_width,
               std::optional<double> fixed_lo, std::optional<double> fixed_hi) {
  Axis axis;
  axis.scale = scale;
  axis.width = symlog_width > 0.0 && std::isfinite(symlog_width) ? symlog_width : 1.0;
  double mn = std::numeric_limits<double>::infinity(), mx = -mn;
  for (double v : values) {
    if (!axis.drawable(v)) continue;
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  if (fixed_lo && axis.drawable(*fixed_lo)) mn = *fixed_lo;
  if (fixed_hi && axis.drawable(*fixed_hi)) mx = *fixed_hi;
  const bool have_data = mn <= mx;

  switch (scale) {
    case Scale::Linear: {
      if (!have_data) mn = 0.0, mx = 1.0;
      axis.ticks = nice_ticks(mn, mx);
      axis.lo = axis.ticks.front();
      axis.hi = axis.ticks.back();
      axis.step = axis.ticks.size() > 1 ? axis.ticks[1] - axis.ticks[0] : 0.0;
      break;
    }
    case Scale::Log: {
      if (!have_data) mn = 1.0, mx = 10.0;
      axis.lo = std::pow(10.0, std::floor(std::log10(mn) + 1e-9));
      axis.hi = std::pow(10.0, std::ceil(std::log10(mx) - 1e-9));
      if (axis.hi <= axis.lo) axis.hi = axis.lo * 10.0;
      break;
    }
    case Scale::SymLog: {
      if (!have_data) mn = -axis.width, mx = axis.width;
      axis.lo = mn >= 0.0 ? 0.0 : -next_symlog_tick(-mn, axis.width);
      axis.hi = mx <= 0.0 ? 0.0 : next_symlog_tick(mx, axis.width);
      if (axis.lo == axis.hi) axis.lo = -axis.width, axis.hi = axis.width;
      break;
    }
  }
  if (fixed_lo && axis.drawable(*fixed_lo)) axis.lo = *fixed_lo;
  if (fixed_hi && axis.drawable(*fixed_hi)) axis.hi = *fixed_hi;
  if (axis.hi < axis.lo) std::swap(axis.lo, axis.hi);
  if (axis.hi == axis.lo) {
    // Degenerate fixed range: widen around the value.
    const double d = axis.lo == 0.0 ? 1.0 : std::fabs(axis.lo) * 0.1;
    axis.hi = scale == Scale::Log ? axis.lo * 10.0 : axis.lo + d;
    if (scale != Scale::Log) axis.lo -= d;
  }
  switch (scale) {
    case Scale::Linear:
      if (fixed_lo || fixed_hi) {
        axis.ticks = within(nice_ticks(axis.lo, axis.hi), axis.lo, axis.hi);
        axis.step = 0.0;
        if (axis.ticks.size() > 1) axis.step = axis.ticks[1] - axis.ticks[0];
      }
      break;
    case Scale::Log: axis.ticks = log_ticks(axis.lo, axis.hi); break;
    case Scale::SymLog: axis.ticks = symlog_ticks(axis.lo, axis.hi, axis.width); break;
  }
  return axis;
}

// Chart frame: margins, plot area and the shared axis/legend drawing.
class Frame {
 public:
  Frame(const ChartOptions& opt, Axis x, Axis y, std::vector<std::string> legend_names,
        std::vector<std::string> legend_colors, double inner_pad)
      : opt_(opt), x_(std::move(x)), y_(std::move(y)), names_(std::move(legend_names)),
        colors_(std::move(legend_colors)), pad_(inner_pad) {
    width_ = std::max(opt.width, 160);
    height_ = std::max(opt.height, 120);
    std::size_t label_chars = 1;
    for (double t : y_.ticks) label_chars = std::max(label_chars, tick_label(t, y_.step).size());
    left_ = 12.0 + kCharWidth * static_cast<double>(label_chars) + (opt.y_title.empty() ? 0.0 : 22.0);
    top_ = opt.title.empty() ? 14.0 : 38.0;
    bottom_ = 28.0 + (opt.x_title.empty() ? 0.0 : 22.0);
    bool any_name = false;
    std::size_t name_chars = 0;
    for (const auto& n : names_) {
      any_name = any_name || !n.empty();
      name_chars = std::max(name_chars, text_length(shorten(n, kLegendChars)));
    }
    legend_width_ = any_name ? std::clamp(30.0 + kCharWidth * static_cast<double>(name_chars), 70.0, 240.0) : 0.0;
    right_ = legend_width_ > 0.0 ? legend_width_ + 18.0 : 18.0;
  }

  void add_bottom_margin(double extra) { bottom_ += extra; }
  double plot_width() const { return std::max(10.0, width_ - left_ - right_); }
  double plot_height() const { return std::max(10.0, height_ - top_ - bottom_); }
  // Coordinates inside the plot area.
  double xp(double v) const { return pad_ + x_.fraction(v) * (plot_width() - 2.0 * pad_); }
  double yp(double v) const { return plot_height() - pad_ - y_.fraction(v) * (plot_height() - 2.0 * pad_); }
  const Axis& x() const { return x_; }
  const Axis& y() const { return y_; }

  // <svg> root, title, background, axes frame; leaves the plot-area <svg> open.
  void open(std::string& out, std::size_t series_count, bool numeric_x) const {
    out += fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{}\" height=\"{}\" "
        "viewBox=\"0 0 {} {}\" role=\"img\" data-series=\"{}\" font-family=\"Helvetica, Arial, sans-serif\" "
        "font-size=\"12\">",
        width_, height_, width_, height_, series_count);
    out += "<title>" + xml_escape(opt_.title.empty() ? "chart" : opt_.title) + "</title>";
    out += fmt::format("<rect class=\"background\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>", width_, height_);
    if (!opt_.title.empty()) {
      out += fmt::format("<text class=\"chart-title\" x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" "
                         "font-weight=\"bold\">{}</text>",
                         px(left_ + plot_width() / 2.0), xml_escape(opt_.title));
    }
    // Grid and tick labels.
    out += "<g class=\"axis y-axis\">";
    for (double t : y_.ticks) {
      const double yy = top_ + yp(t);
      out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#e4e4e4\"/>", px(left_),
                         px(left_ + plot_width()), px(yy), px(yy));
      out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>",
                         px(left_ - 6.0), px(yy), xml_escape(tick_label(t, y_.step)));
    }
    out += "</g>";
    if (numeric_x) {
      out += "<g class=\"axis x-axis\">";
      for (double t : x_.ticks) {
        const double xx = left_ + xp(t);
        out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#e4e4e4\"/>", px(xx), px(xx),
                           px(top_), px(top_ + plot_height()));
        out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", px(xx),
                           px(top_ + plot_height() + 16.0), xml_escape(tick_label(t, x_.step)));
      }
      out += "</g>";
    }
    if (!opt_.x_title.empty()) {
      out += fmt::format("<text class=\"axis-title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                         px(left_ + plot_width() / 2.0), px(height_ - 10.0), xml_escape(opt_.x_title));
    }
    if (!opt_.y_title.empty()) {
      const double cx = 14.0, cy = top_ + plot_height() / 2.0;
      out += fmt::format(
          "<text class=\"axis-title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">{}</text>",
          px(cx), px(cy), px(cx), px(cy), xml_escape(opt_.y_title));
    }
    out += fmt::format("<rect class=\"frame\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888888\"/>",
                       px(left_), px(top_), px(plot_width()), px(plot_height()));
    // Plot area: a nested viewport clips marks to the axes without needing ids.
    out += fmt::format("<svg class=\"plot\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" overflow=\"hidden\">",
                       px(left_), px(top_), px(plot_width()), px(plot_height()));
  }

  void ref_lines(std::string& out, const std::vector<RefLine>& refs) const {
    for (const auto& r : refs) {
      const Axis& axis = r.vertical ? x_ : y_;
      if (!axis.drawable(r.value)) continue;
      const std::string color = r.color.empty() ? "#444444" : r.color;
      out += fmt::format("<g class=\"refline\" data-value=\"{}\">", xml_escape(format_exact(r.value)));
      if (!r.vertical) {
        const double yy = yp(r.value);
        out += fmt::format("<line x1=\"0\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"1.5\" "
                           "stroke-dasharray=\"6 4\"/>",
                           px(plot_width()), px(yy), px(yy), xml_escape(color));
        const double ty = yy < 16.0 ? yy + 14.0 : yy - 4.0;
        if (!r.label.empty())
          out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"{}\">{}</text>", px(plot_width() - 4.0),
                             px(ty), xml_escape(color), xml_escape(r.label));
      } else {
        const double xx = xp(r.value);
        out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"0\" y2=\"{}\" stroke=\"{}\" stroke-width=\"1.5\" "
                           "stroke-dasharray=\"6 4\"/>",
                           px(xx), px(xx), px(plot_height()), xml_escape(color));
        const bool right_side = xx > plot_width() - 80.0;
        if (!r.label.empty())
          out += fmt::format("<text x=\"{}\" y=\"14\" text-anchor=\"{}\" fill=\"{}\">{}</text>",
                             px(right_side ? xx - 4.0 : xx + 4.0), right_side ? "end" : "start", xml_escape(color),
                             xml_escape(r.label));
      }
      out += "</g>";
    }
  }

  // Closes the plot-area viewport.
  static void end_plot(std::string& out) { out += "</svg>"; }

  // Draws the legend and closes the chart (after end_plot).
  void finish(std::string& out, bool line_swatch) const {
    if (legend_width_ > 0.0) {
      const double lx = left_ + plot_width() + 14.0;
      out += "<g class=\"legend\">";
      for (std::size_t i = 0; i < names_.size(); ++i) {
        const double ly = top_ + 8.0 + 18.0 * static_cast<double>(i);
        if (ly > height_ - 6.0) break;
        out += "<g class=\"legend-item\"><title>" + xml_escape(names_[i]) + "</title>";
        if (line_swatch)
          out += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2.5\"/>", px(lx),
                             px(lx + 18.0), px(ly), px(ly), xml_escape(colors_[i]));
        else
          out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>", px(lx + 3.0),
                             px(ly - 6.0), xml_escape(colors_[i]));
        out += fmt::format("<text x=\"{}\" y=\"{}\" dominant-baseline=\"middle\">{}</text>", px(lx + 24.0), px(ly),
                           xml_escape(shorten(names_[i], kLegendChars)));
        out += "</g>";
      }
      out += "</g>";
    }
    out += "</svg>";
  }

  double left() const { return left_; }
  double top() const { return top_; }

 private:
  static constexpr std::size_t kLegendChars = 30;
  const ChartOptions& opt_;
  Axis x_, y_;
  std::vector<std::string> names_, colors_;
  double pad_ = 0.0;
  int width_ = 640, height_ = 400;
  double left_ = 0, right_ = 0, top_ = 0, bottom_ = 0, legend_width_ = 0;
};

std::string point_title(const std::string& name, double x, double y) {
  std::string t = name.empty() ? "" : name + ": ";
  return t + "(" + format_number(x, 6) + ", " + format_number(y, 6) + ")";
}

std::string xy_chart(const ChartOptions& opt, const std::vector<Series>& series, const std::vector<RefLine>& refs,
                     bool lines) {
  std::vector<double> xs, ys;
  for (const auto& s : series) {
    const std::size_t n = std::min(s.x.size(), s.y.size());
    for (std::size_t i = 0; i < n; ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      xs.push_back(s.x[i]);
      ys.push_back(s.y[i]);
    }
  }
  for (const auto& r : refs) (r.vertical ? xs : ys).push_back(r.value);
  std::vector<std::string> names, colors;
  for (std::size_t i = 0; i < series.size(); ++i) {
    names.push_back(series[i].name);
    colors.push_back(series_color(series[i].color, i));
  }
  Frame frame(opt, make_axis(xs, opt.x_scale, opt.symlog_width, opt.x_min, opt.x_max),
              make_axis(ys, opt.y_scale, opt.symlog_width, opt.y_min, opt.y_max), names, colors, 8.0);
  std::string out;
  out.reserve(4096);
  frame.open(out, series.size(), true);
  // y = x is a straight segment when both axes share one scale (the same transform of x and y).
  if (opt.identity_line && opt.x_scale == opt.y_scale) {
    const double a = std::max(frame.x().lo, frame.y().lo), b = std::min(frame.x().hi, frame.y().hi);
    if (a < b)
      out += fmt::format("<line class=\"identity\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999999\" "
                         "stroke-dasharray=\"2 3\"/>",
                         px(frame.xp(a)), px(frame.yp(a)), px(frame.xp(b)), px(frame.yp(b)));
  }
  frame.ref_lines(out, refs);
  for (std::size_t si = 0; si < series.size(); ++si) {
    const Series& s = series[si];
    const std::string color = xml_escape(colors[si]);
    const std::size_t n = std::min(s.x.size(), s.y.size());
    std::string path, marks;
    std::size_t points = 0;
    bool pen_down = false;
    for (std::size_t i = 0; i < n; ++i) {
      if (!frame.x().drawable(s.x[i]) || !frame.y().drawable(s.y[i])) {
        pen_down = false;
        continue;
      }
      const double cx = frame.xp(s.x[i]), cy = frame.yp(s.y[i]);
      path += fmt::format("{}{} {} ", pen_down ? "L" : "M", px(cx), px(cy));
      pen_down = true;
      ++points;
      if (!lines || opt.markers) {
        marks += fmt::format("<circle class=\"point\" cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{}\"{}><title>{}</title></circle>",
                             px(cx), px(cy), lines ? "3" : "3.5", color, lines ? "" : " fill-opacity=\"0.75\"",
                             xml_escape(point_title(s.name, s.x[i], s.y[i])));
      }
    }
    out += fmt::format("<g class=\"series\" data-name=\"{}\" data-points=\"{}\">", xml_escape(s.name), points);
    if (lines && !path.empty()) {
      path.pop_back();
      out += fmt::format("<path class=\"line\" d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}/>", path, color,
                         s.dashed ? " stroke-dasharray=\"7 4\"" : "");
    }
    out += marks;
    out += "</g>";
  }
  Frame::end_plot(out);
  frame.finish(out, lines);
  return out;
}

double bar_baseline(const Axis& y) {
  if (y.scale == Scale::Log) return y.lo;
  return std::clamp(0.0, y.lo, y.hi);
}

}  // namespace

std::string line_chart(const ChartOptions& options, const std::vector<Series>& series,
                       const std::vector<RefLine>& refs) {
  return xy_chart(options, series, refs, true);
}

std::string scatter_chart(const ChartOptions& options, const std::vector<Series>& series,
                          const std::vector<RefLine>& refs) {
  return xy_chart(options, series, refs, false);
}

std::string bar_chart(const ChartOptions& options, const std::vector<std::string>& categories,
                      const std::vector<ValueSeries>& series, const std::vector<RefLine>& refs) {
  std::vector<double> ys;
  if (options.y_scale != Scale::Log) ys.push_back(0.0);
  for (const auto& s : series) ys.insert(ys.end(), s.values.begin(), s.values.end());
  for (const auto& r : refs)
    if (!r.vertical) ys.push_back(r.value);
  std::vector<std::string> names, colors;
  for (std::size_t i = 0; i < series.size(); ++i) {
    names.push_back(series[i].name);
    colors.push_back(series_color(series[i].color, i));
  }
  Axis x;  // unused for categorical positions, kept for the frame
  Frame frame(options, x, make_axis(ys, options.y_scale, options.symlog_width, options.y_min, options.y_max), names,
              colors, 0.0);
  const std::size_t ncat = std::max<std::size_t>(categories.size(), 1);
  std::size_t label_chars = 0;
  for (const auto& c : categories) label_chars = std::max(label_chars, text_length(shorten_middle(c, 28)));
  double group = frame.plot_width() / static_cast<double>(ncat);
  const bool rotate = kCharWidth * static_cast<double>(label_chars) > group - 4.0;
  if (rotate) {
    frame.add_bottom_margin(std::min(110.0, kCharWidth * 0.75 * static_cast<double>(label_chars)));
    group = frame.plot_width() / static_cast<double>(ncat);
  }
  std::string out;
  out.reserve(4096);
  frame.open(out, series.size(), false);
  std::vector<RefLine> horizontal;
  for (const auto& r : refs)
    if (!r.vertical) horizontal.push_back(r);
  const double base = frame.yp(bar_baseline(frame.y()));
  const double nser = static_cast<double>(std::max<std::size_t>(series.size(), 1));
  const double bar_w = group * 0.8 / nser;
  for (std::size_t si = 0; si < series.size(); ++si) {
    const ValueSeries& s = series[si];
    const std::string color = xml_escape(colors[si]);
    std::size_t bars = 0;
    std::string marks;
    for (std::size_t ci = 0; ci < s.values.size() && ci < categories.size(); ++ci) {
      const double v = s.values[ci];
      if (!frame.y().drawable(v)) continue;
      const double top = frame.yp(v);
      const double x0 = group * static_cast<double>(ci) + group * 0.1 + bar_w * static_cast<double>(si);
      marks += fmt::format("<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"><title>{}</title></rect>",
                           px(x0), px(std::min(top, base)), px(std::max(bar_w - 1.0, 1.0)),
                           px(std::max(std::fabs(base - top), 0.5)), color,
                           xml_escape((s.name.empty() ? "" : s.name + " \u00b7 ") + categories[ci] + ": " +
                                      format_number(v, 6)));
      ++bars;
    }
    out += fmt::format("<g class=\"series\" data-name=\"{}\" data-points=\"{}\">", xml_escape(s.name), bars);
    out += marks;
    out += "</g>";
  }
  frame.ref_lines(out, horizontal);
  Frame::end_plot(out);
  // Category labels below the plot area (outside the clipped viewport).
  out += "<g class=\"axis x-axis\">";
  for (std::size_t ci = 0; ci < categories.size(); ++ci) {
    const double cx = frame.left() + group * (static_cast<double>(ci) + 0.5);
    const double cy = frame.top() + frame.plot_height() + 16.0;
    std::string label = xml_escape(shorten_middle(categories[ci], 28));
    if (text_length(categories[ci]) > 28) label = "<title>" + xml_escape(categories[ci]) + "</title>" + label;
    if (rotate)
      out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" transform=\"rotate(-40 {} {})\">{}</text>", px(cx),
                         px(cy), px(cx), px(cy), label);
    else
      out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", px(cx), px(cy), label);
  }
  out += "</g>";
  frame.finish(out, false);
  return out;
}

std::string histogram_chart(const ChartOptions& options, const std::vector<ValueSeries>& series,
                            const std::vector<RefLine>& refs) {
  double mn = std::numeric_limits<double>::infinity(), mx = -mn;
  std::size_t total = 0;
  for (const auto& s : series)
    for (double v : s.values)
      if (std::isfinite(v)) mn = std::min(mn, v), mx = std::max(mx, v), ++total;
  if (total == 0) mn = 0.0, mx = 1.0;
  if (mn == mx) {
    const double d = mn == 0.0 ? 0.5 : std::fabs(mn) * 0.05;
    mn -= d;
    mx += d;
  }
  std::size_t largest = 0;
  for (const auto& s : series) largest = std::max(largest, s.values.size());
  int bins = options.histogram_bins;
  if (bins <= 0) bins = std::clamp(static_cast<int>(std::ceil(std::sqrt(static_cast<double>(largest)))), 5, 50);
  const double bin_w = (mx - mn) / bins;

  std::vector<std::vector<double>> counts(series.size(), std::vector<double>(static_cast<std::size_t>(bins), 0.0));
  std::vector<double> ys;
  if (options.y_scale != Scale::Log) ys.push_back(0.0);
  for (std::size_t si = 0; si < series.size(); ++si) {
    for (double v : series[si].values) {
      if (!std::isfinite(v)) continue;
      const auto b = std::clamp(static_cast<int>(std::floor((v - mn) / bin_w)), 0, bins - 1);
      counts[si][static_cast<std::size_t>(b)] += 1.0;
    }
    ys.insert(ys.end(), counts[si].begin(), counts[si].end());
  }
  std::vector<double> xs = {mn, mx};
  for (const auto& r : refs) (r.vertical ? xs : ys).push_back(r.value);
  std::vector<std::string> names, colors;
  for (std::size_t i = 0; i < series.size(); ++i) {
    names.push_back(series[i].name);
    colors.push_back(series_color(series[i].color, i));
  }
  ChartOptions opt = options;
  if (opt.y_title.empty()) opt.y_title = "count";
  Frame frame(opt, make_axis(xs, Scale::Linear, 1.0, opt.x_min, opt.x_max),
              make_axis(ys, opt.y_scale, opt.symlog_width, opt.y_min, opt.y_max), names, colors, 0.0);
  std::string out;
  out.reserve(4096);
  frame.open(out, series.size(), true);
  const double base = frame.yp(bar_baseline(frame.y()));
  const char* opacity = series.size() > 1 ? "0.55" : "0.85";
  for (std::size_t si = 0; si < series.size(); ++si) {
    const std::string color = xml_escape(colors[si]);
    std::string marks;
    std::size_t drawn = 0;
    for (int b = 0; b < bins; ++b) {
      const double c = counts[si][static_cast<std::size_t>(b)];
      if (c <= 0.0 || !frame.y().drawable(c)) continue;
      const double lo = mn + bin_w * b, hi = mn + bin_w * (b + 1);
      const double x0 = frame.xp(lo), x1 = frame.xp(hi), top = frame.yp(c);
      marks += fmt::format(
          "<rect class=\"bar\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" fill-opacity=\"{}\" "
          "stroke=\"#ffffff\" stroke-width=\"0.5\"><title>{}</title></rect>",
          px(x0), px(std::min(top, base)), px(std::max(x1 - x0, 0.5)), px(std::max(std::fabs(base - top), 0.5)), color,
          opacity,
          xml_escape((series[si].name.empty() ? "" : series[si].name + ": ") + "[" + format_number(lo, 4) + ", " +
                     format_number(hi, 4) + ") " + format_number(c, 10)));
      ++drawn;
    }
    std::size_t samples = 0;
    for (double v : series[si].values) samples += std::isfinite(v);
    out += fmt::format("<g class=\"series\" data-name=\"{}\" data-points=\"{}\" data-samples=\"{}\">",
                       xml_escape(series[si].name), drawn, samples);
    out += marks;
    out += "</g>";
  }
  frame.ref_lines(out, refs);
  Frame::end_plot(out);
  frame.finish(out, false);
  return out;
}

double nice_step(double raw_step) {
  if (!std::isfinite(raw_step) || raw_step <= 0.0) return 1.0;
  const double e = std::floor(std::log10(raw_step));
  const double p = std::pow(10.0, e);
  const double f = raw_step / p;
  double n = 10.0;
  if (f <= 1.0 + 1e-9) n = 1.0;
  else if (f <= 2.0 + 1e-9) n = 2.0;
  else if (f <= 5.0 + 1e-9) n = 5.0;
  return n * p;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (lo > hi) std::swap(lo, hi);
  if (lo == hi) {
    const double d = lo == 0.0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= d;
    hi += d;
  }
  const double step = nice_step((hi - lo) / std::max(1, target));
  const double first = std::floor(lo / step + 1e-9);
  const double last = std::ceil(hi / step - 1e-9);
  std::vector<double> ticks;
  for (double i = first; i <= last + 0.5; i += 1.0) {
    double t = i * step;
    if (std::fabs(t) < step * 1e-9) t = 0.0;
    ticks.push_back(t);
  }
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo <= 0.0 || hi <= 0.0) return {};
  if (lo > hi) std::swap(lo, hi);
  const int e0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int e1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (e1 <= e0) e1 = e0 + 1;
  std::vector<double> ticks;
  if (e1 - e0 == 1) {
    for (double m : {1.0, 2.0, 5.0, 10.0}) ticks.push_back(m * std::pow(10.0, e0));
  } else {
    const int stride = (e1 - e0 + 7) / 8;
    for (int e = e0; e <= e1; e += stride) ticks.push_back(std::pow(10.0, e));
  }
  std::vector<double> out;
  for (double t : ticks)
    if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) out.push_back(t);
  return out;
}

std::vector<double> symlog_ticks(double lo, double hi, double width) {
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(width > 0.0) || !std::isfinite(width)) return {};
  if (lo > hi) std::swap(lo, hi);
  std::vector<double> candidates = {0.0};
  // Each side: w·10^k from its outermost decade inwards, at most ~4 labels; w itself
  // (0.3 decades from 0 on this scale, so its label would touch 0's) only when the axis spans few
  // decades in all.
  const auto decades = [&](double reach) {
    return reach <= width ? 0 : static_cast<int>(std::ceil(std::log10(reach / width) - 1e-9));
  };
  const int total = (lo < 0.0 ? decades(-lo) : 0) + (hi > 0.0 ? decades(hi) : 0);
  for (const double sign : {-1.0, 1.0}) {
    const double reach = sign < 0 ? -lo : hi;
    if (reach <= 0.0) continue;
    const int kmax = decades(reach);
    const int stride = (kmax + 1 + 3) / 4;
    for (int k = kmax; k >= 0; k -= stride) {
      if (k == 0 && (kmax > 2 || total > 4)) break;
      candidates.push_back(sign * width * std::pow(10.0, k));
    }
  }
  std::sort(candidates.begin(), candidates.end());
  return within(candidates, lo, hi);
}

std::string tick_label(double value, double step) {
  if (!std::isfinite(value)) return "";
  if (step > 0.0 && std::fabs(value) < step * 1e-6) return "0";
  if (value == 0.0) return "0";
  const double mag = std::fabs(value);
  const int ev = static_cast<int>(std::floor(std::log10(mag) + 1e-12));
  auto scientific = [&](int decimals) {
    std::string s = fmt::format("{:.{}e}", value, std::clamp(decimals, 0, 6));
    // Trim the mantissa's trailing zeros and tidy the exponent.
    const auto e = s.find('e');
    std::string m = s.substr(0, e), x = s.substr(e + 1);
    if (m.find('.') != std::string::npos) {
      while (m.back() == '0') m.pop_back();
      if (m.back() == '.') m.pop_back();
    }
    const int exponent = std::stoi(x);
    return m + "e" + std::to_string(exponent);
  };
  if (step <= 0.0) {
    if (ev < -3 || ev > 4) return scientific(3);
    return format_number(value, 4);
  }
  const int es = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  if (std::max(mag, step) >= 1e5 || step < 1e-4) return scientific(ev - es);
  const int decimals = std::max(0, -es);
  std::string s = fmt::format("{:.{}f}", value, decimals);
  if (s.find_first_not_of("-0.") == std::string::npos) return "0";
  return s;
}

std::string xml_escape(std::string_view text) {
  static constexpr const char* kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  std::size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default:
          if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') out += kReplacement;
          else if (c == 0x7F) out += kReplacement;
          else out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    // Multi-byte UTF-8: validate length, continuation bytes, overlongs, surrogates and range.
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    bool ok = len != 0 && i + len <= text.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(text[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok) {
      if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF) ||
          cp == 0xFFFE || cp == 0xFFFF || (cp >= 0x80 && cp <= 0x9F))
        ok = false;
    }
    if (ok) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out += kReplacement;
      ++i;
    }
  }
  return out;
}

}  // namespace deltaedit::report
