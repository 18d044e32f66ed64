#include "report/csv.h"

#include <fstream>
#include <stdexcept>

#include "io/writer.h"

namespace deltaedit::report {

std::string csv_field(std::string_view field) {
  const bool needs_quotes = field.find_first_of(",\"\r\n") != std::string_view::npos ||
                            (!field.empty() && (field.front() == ' ' || field.front() == '\t' ||
                                                field.back() == ' ' || field.back() == '\t'));
  if (!needs_quotes) return std::string(field);
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

std::string to_csv(const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows) {
  std::string out;
  auto line = [&out](const auto& fields, auto text_of) {
    bool first = true;
    for (const auto& f : fields) {
      if (!first) out += ',';
      first = false;
      out += csv_field(text_of(f));
    }
    out += "\r\n";
  };
  if (!header.empty()) line(header, [](const std::string& s) -> const std::string& { return s; });
  for (const auto& row : rows) line(row, [](const Cell& c) { return c.raw(); });
  return out;
}

void write_csv(const std::filesystem::path& file, const std::vector<std::string>& header,
               const std::vector<std::vector<Cell>>& rows) {
  io::replace_file(file, to_csv(header, rows));
}

}  // namespace deltaedit::report
