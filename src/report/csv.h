// CSV output (RFC 4180): CRLF line ends; fields holding a comma, a double
// quote, CR, LF, or leading/trailing blanks are quoted, with quotes doubled.
// Numbers are written exactly (shortest text that reads back to the value).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "report/cell.h"

namespace deltaedit::report {

std::string csv_field(std::string_view field);

std::string to_csv(const std::vector<std::string>& header, const std::vector<std::vector<Cell>>& rows);

// Writes to_csv(header, rows) to `file` (replacing it); throws std::runtime_error on I/O failure.
void write_csv(const std::filesystem::path& file, const std::vector<std::string>& header,
               const std::vector<std::vector<Cell>>& rows);

}  // namespace deltaedit::report
