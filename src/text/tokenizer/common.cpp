#include "text/tokenizer/common.h"

namespace deltaedit::text::detail {

void fail(ErrorKind kind, const std::string& file, const std::string& msg) {
  throw Error(kind, msg, file);
}

std::string type_of(const json& j, const std::string& file, const std::string& where) {
  if (!j.is_object()) fail(ErrorKind::Format, file, where + " must be a JSON object");
  auto it = j.find("type");
  if (it == j.end() || !it->is_string())
    fail(ErrorKind::Format, file, where + " has no string field 'type'");
  return it->get<std::string>();
}

std::string unsupported_msg(const std::string& where, const std::string& type,
                            const char* supported) {
  return where + " type '" + type + "' is not supported (supported: " + supported + ")";
}

int64_t get_int(const json& v, const std::string& file, const std::string& what, int64_t lo,
                int64_t hi) {
  const bool is_int = v.is_number_integer();  // signed or unsigned
  const bool in_range =
      is_int && (v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi)
                                        : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi);
  if (!in_range)
    fail(ErrorKind::Format, file,
         what + " " + v.dump() + " is not an integer in [" + std::to_string(lo) + ", " +
             std::to_string(hi) + "]");
  return v.is_number_unsigned() ? static_cast<int64_t>(v.get<uint64_t>()) : v.get<int64_t>();
}

bool get_bool(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  return it->get<bool>();
}

void check_depth(int depth, const std::string& file, const char* what) {
  if (depth > kMaxNesting)
    fail(ErrorKind::Format, file,
         std::string(what) + " Sequence nesting is deeper than " + std::to_string(kMaxNesting));
}

ByteMap::ByteMap() {
  char_to_byte.fill(-1);
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
    utf8_append(byte_to_str[static_cast<std::size_t>(b)], cp);
    char_to_byte[cp] = static_cast<int16_t>(b);
  }
}

Pattern::Pattern(const json& j, const std::string& file, const std::string& where) {
  if (j.is_object() && j.contains("String")) {
    literal_ = j.at("String").get<std::string>();
  } else if (j.is_object() && j.contains("Regex")) {
    regex_ = std::make_unique<Regex>(j.at("Regex").get<std::string>(), file + ": " + where);
  } else {
    fail(ErrorKind::Format, file, where + " pattern must be {\"String\": ...} or {\"Regex\": ...}");
  }
}

void Pattern::find_all(std::string_view s, Ranges& out) const {
  if (regex_) return regex_->find_all(s, out);
  if (literal_.empty()) return;
  for (std::size_t p = s.find(literal_); p != std::string_view::npos;
       p = s.find(literal_, p + literal_.size()))
    out.emplace_back(p, p + literal_.size());
}

std::string Pattern::replace_all(std::string_view s, std::string_view content) const {
  Ranges m;
  find_all(s, m);
  if (m.empty()) return std::string(s);
  std::string r;
  r.reserve(s.size());
  std::size_t prev = 0;
  for (auto [b, e] : m) {
    r.append(s.substr(prev, b - prev));
    r.append(content);
    prev = e;
  }
  r.append(s.substr(prev));
  return r;
}

}  // namespace deltaedit::text::detail
