#include "text/dataset.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "util/error.h"

namespace deltaedit::text {
namespace {
using nlohmann::json;

[[noreturn]] void bad(const std::string& source, size_t line, const std::string& msg) {
  throw Error(ErrorKind::Format, fmt::format("line {}: {}", line, msg), source);
}

std::string str_field(const json& j, const char* key, const std::string& source, size_t line) {
  const auto& v = j.at(key);
  if (!v.is_string()) bad(source, line, fmt::format("\"{}\" must be a string", key));
  return v.get<std::string>();
}

Sequence prompt_response(const Tokenizer& tok, const std::string& prompt, const std::string& response) {
  Sequence s;
  s.ids = tok.encode(prompt, true);
  s.scored.assign(s.ids.size(), 0);
  auto r = tok.encode(response, false);
  s.ids.insert(s.ids.end(), r.begin(), r.end());
  s.scored.insert(s.scored.end(), r.size(), 1);
  return s;
}

void finish(Sequence& s, const DataOptions& opt, const std::string& source, size_t line) {
  if (opt.max_length > 0 && s.ids.size() > opt.max_length) {
    s.ids.resize(opt.max_length);
    s.scored.resize(opt.max_length);
  }
  if (!s.scored.empty()) s.scored[0] = 0;  // the first token has no prediction
  bool any = false;
  for (auto m : s.scored) any |= m != 0;
  if (!any)
    bad(source, line,
        opt.max_length ? "no scored token left (empty response, or cut off by --max-length)"
                       : "no scored token (empty text or response)");
}

const Tokenizer& need(const Tokenizer* tok, const std::string& source, size_t line) {
  if (!tok) bad(source, line, "text records need a tokenizer (the model directory's tokenizer.json)");
  return *tok;
}
}  // namespace

std::vector<Record> parse_jsonl(std::string_view text, const std::string& source, const Tokenizer* tok,
                                const DataOptions& opt) {
  std::vector<Record> out;
  size_t line = 0, pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view l = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++line;
    if (l.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    json j;
    try {
      j = json::parse(l);
    } catch (const json::exception& e) {
      bad(source, line, std::string("invalid JSON: ") + e.what());
    }
    if (!j.is_object()) bad(source, line, "a record must be a JSON object");
    Record r;
    r.line = line;
    if (j.contains("chosen") || j.contains("rejected")) {
      if (!j.contains("prompt") || !j.contains("chosen") || !j.contains("rejected"))
        bad(source, line, "a preference record needs \"prompt\", \"chosen\" and \"rejected\"");
      const auto& t = need(tok, source, line);
      r.preference = true;
      r.prompt = str_field(j, "prompt", source, line);
      r.response = str_field(j, "chosen", source, line);
      r.seq = prompt_response(t, r.prompt, r.response);
      r.rejected = prompt_response(t, r.prompt, str_field(j, "rejected", source, line));
      finish(*r.rejected, opt, source, line);
    } else if (j.contains("prompt") || j.contains("response")) {
      if (!j.contains("prompt") || !j.contains("response"))
        bad(source, line, "a prompt/response record needs both \"prompt\" and \"response\"");
      r.prompt = str_field(j, "prompt", source, line);
      r.response = str_field(j, "response", source, line);
      r.seq = prompt_response(need(tok, source, line), r.prompt, r.response);
    } else if (j.contains("text")) {
      const std::string t = str_field(j, "text", source, line);
      r.seq.ids = need(tok, source, line).encode(t, true);
      r.seq.scored.assign(r.seq.ids.size(), 1);
    } else if (j.contains("input_ids")) {
      const auto& v = j["input_ids"];
      if (!v.is_array()) bad(source, line, "\"input_ids\" must be a list of integers");
      for (const auto& x : v) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
          bad(source, line, "\"input_ids\" must hold non-negative integers");
        r.seq.ids.push_back(int32_t(x.get<int64_t>()));
      }
      r.seq.scored.assign(r.seq.ids.size(), 1);
    } else {
      bad(source, line,
          "unknown record: expected {\"text\"}, {\"prompt\",\"response\"}, {\"input_ids\"} or "
          "{\"prompt\",\"chosen\",\"rejected\"}");
    }
    finish(r.seq, opt, source, line);
    if (tok)
      for (int32_t id : r.seq.ids)
        if (size_t(id) >= tok->vocab_size()) bad(source, line, fmt::format("token id {} outside the vocabulary", id));
    out.push_back(std::move(r));
    if (opt.limit && out.size() >= opt.limit) break;
  }
  if (out.empty()) throw Error(ErrorKind::Format, "no records", source);
  return out;
}

std::vector<Record> load_jsonl(const std::filesystem::path& path, const Tokenizer* tok, const DataOptions& opt) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot open data file", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_jsonl(ss.str(), path.string(), tok, opt);
}

}  // namespace deltaedit::text
