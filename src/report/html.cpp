#include "report/html.h"

#include <fstream>
#include <stdexcept>

#include "io/writer.h"

#include <fmt/format.h>

#include "report/svg.h"

namespace deltaedit::report {
namespace {

constexpr const char* kStyle = R"(
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d1d1f;
  background: #fafafa; margin: 0; line-height: 1.5; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #ffffff; }
h1 { font-size: 1.8em; margin: 0.2em 0 0.4em; }
h2 { font-size: 1.35em; margin-top: 2em; border-bottom: 1px solid #dddddd; padding-bottom: 0.2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
.summary { background: #f3f6fa; border: 1px solid #d8e0ea; border-radius: 6px; padding: 12px 18px; margin: 1em 0; }
.summary dl { display: grid; grid-template-columns: max-content auto; gap: 2px 18px; margin: 0; }
.summary dt { font-weight: 600; }
.summary dd { margin: 0; font-variant-numeric: tabular-nums; }
nav.contents ol { margin: 0.3em 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
caption { caption-side: top; text-align: left; font-style: italic; padding-bottom: 4px; }
th, td { border: 1px solid #d0d0d0; padding: 4px 10px; vertical-align: top; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
figure.figure { margin: 1.2em 0; }
figure.figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #555555; }
pre { background: #f5f5f5; border: 1px solid #e0e0e0; padding: 8px 12px; overflow-x: auto; }
td.verdict-supported { background: #e3f4e1; }
td.verdict-partial { background: #fff4d6; }
td.verdict-notsupported { background: #fbe3e1; }
td.verdict-inconclusive { background: #eeeeee; }
footer { margin-top: 3em; padding-top: 0.8em; border-top: 1px solid #dddddd; font-size: 0.85em; color: #666666; }
)";

const char* verdict_class(Verdict v) {
  switch (v) {
    case Verdict::Supported: return "verdict verdict-supported";
    case Verdict::Partial: return "verdict verdict-partial";
    case Verdict::NotSupported: return "verdict verdict-notsupported";
    case Verdict::Inconclusive: return "verdict verdict-inconclusive";
    case Verdict::Neutral: return "verdict";
  }
  return "verdict";
}

void render_table(std::string& out, const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows,
                  const std::string& caption) {
  out += "<table>";
  if (!caption.empty()) out += "<caption>" + xml_escape(caption) + "</caption>";
  if (!header.empty()) {
    out += "<thead><tr>";
    for (const auto& h : header) out += "<th scope=\"col\">" + xml_escape(h) + "</th>";
    out += "</tr></thead>";
  }
  out += "<tbody>";
  for (const auto& row : rows) {
    out += "<tr>";
    for (const auto& cell : row) {
      out += cell.is_number() ? "<td class=\"num\">" : "<td>";
      out += xml_escape(cell.display());
      out += "</td>";
    }
    for (std::size_t i = row.size(); i < header.size(); ++i) out += "<td></td>";
    out += "</tr>";
  }
  out += "</tbody></table>\n";
}

}  // namespace

Report::Report(std::string title) : title_(std::move(title)) {}

Report& Report::add_summary(std::string label, Cell value) {
  summary_.emplace_back(std::move(label), std::move(value));
  return *this;
}

Report& Report::add_summary_text(std::string text) {
  summary_text_.push_back(std::move(text));
  return *this;
}

Report& Report::add_section(std::string title) {
  blocks_.push_back(Block{Kind::Section, std::move(title), {}, {}, {}, {}});
  return *this;
}

Report& Report::add_subsection(std::string title) {
  blocks_.push_back(Block{Kind::Subsection, std::move(title), {}, {}, {}, {}});
  return *this;
}

Report& Report::add_paragraph(std::string text) {
  blocks_.push_back(Block{Kind::Paragraph, std::move(text), {}, {}, {}, {}});
  return *this;
}

Report& Report::add_preformatted(std::string text) {
  blocks_.push_back(Block{Kind::Pre, std::move(text), {}, {}, {}, {}});
  return *this;
}

Report& Report::add_table(std::vector<std::string> header, std::vector<std::vector<Cell>> rows, std::string caption) {
  blocks_.push_back(Block{Kind::Table, {}, std::move(caption), std::move(header), std::move(rows), {}});
  return *this;
}

Report& Report::add_chart(std::string svg, std::string caption) {
  blocks_.push_back(Block{Kind::Chart, std::move(svg), std::move(caption), {}, {}, {}});
  return *this;
}

Report& Report::add_claims(std::vector<Claim> claims) {
  blocks_.push_back(Block{Kind::Claims, {}, {}, {}, {}, std::move(claims)});
  return *this;
}

Report& Report::set_footer(std::string text) {
  footer_ = std::move(text);
  return *this;
}

std::string Report::render() const {
  std::string out;
  out.reserve(16384);
  out += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n";
  out += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\n";
  out += "<title>" + xml_escape(title_) + "</title>\n<style>";
  out += kStyle;
  out += "</style>\n</head>\n<body>\n<main>\n<h1>" + xml_escape(title_) + "</h1>\n";

  if (!summary_.empty() || !summary_text_.empty()) {
    out += "<section class=\"summary\">";
    if (!summary_.empty()) {
      out += "<dl>";
      for (const auto& [label, value] : summary_)
        out += "<dt>" + xml_escape(label) + "</dt><dd>" + xml_escape(value.display()) + "</dd>";
      out += "</dl>";
    }
    for (const auto& t : summary_text_) out += "<p>" + xml_escape(t) + "</p>";
    out += "</section>\n";
  }

  std::size_t sections = 0;
  for (const auto& b : blocks_) sections += b.kind == Kind::Section;
  if (sections > 1) {
    out += "<nav class=\"contents\"><strong>Contents</strong><ol>";
    std::size_t n = 0;
    for (const auto& b : blocks_)
      if (b.kind == Kind::Section) out += fmt::format("<li><a href=\"#s{}\">{}</a></li>", ++n, xml_escape(b.text));
    out += "</ol></nav>\n";
  }

  std::size_t section_no = 0;
  bool in_section = false;
  for (const auto& b : blocks_) {
    switch (b.kind) {
      case Kind::Section:
        if (in_section) out += "</section>\n";
        out += fmt::format("<section id=\"s{}\">\n<h2>{}</h2>\n", ++section_no, xml_escape(b.text));
        in_section = true;
        break;
      case Kind::Subsection: out += "<h3>" + xml_escape(b.text) + "</h3>\n"; break;
      case Kind::Paragraph: out += "<p>" + xml_escape(b.text) + "</p>\n"; break;
      case Kind::Pre: out += "<pre>" + xml_escape(b.text) + "</pre>\n"; break;
      case Kind::Table: render_table(out, b.header, b.rows, b.caption); break;
      case Kind::Chart:
        out += "<figure class=\"figure\">" + b.text;
        if (!b.caption.empty()) out += "<figcaption>" + xml_escape(b.caption) + "</figcaption>";
        out += "</figure>\n";
        break;
      case Kind::Claims:
        out += "<table class=\"claims\"><thead><tr><th scope=\"col\">Experiment</th><th scope=\"col\">Paper's claim</th>"
               "<th scope=\"col\">Measured here</th><th scope=\"col\">Verdict</th></tr></thead><tbody>";
        for (const auto& c : b.claims) {
          out += "<tr><td>" + xml_escape(c.experiment) + "</td><td>" + xml_escape(c.claim) + "</td><td>" +
                 xml_escape(c.measured) + "</td><td class=\"" + verdict_class(c.kind) + "\">" + xml_escape(c.verdict) +
                 "</td></tr>";
        }
        out += "</tbody></table>\n";
        break;
    }
  }
  if (in_section) out += "</section>\n";
  out += "<footer>" + xml_escape(footer_) + "</footer>\n</main>\n</body>\n</html>\n";
  return out;
}

void Report::write(const std::filesystem::path& file) const {
  io::replace_file(file, render());
}

}  // namespace deltaedit::report
