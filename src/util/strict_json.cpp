#include "util/strict_json.h"

#include <algorithm>
#include <cstddef>
#include <set>
#include <vector>

#include "util/error.h"

namespace deltaedit::util {

namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& file, const std::string& msg,
                       const std::string& tensor = {}) {
  throw Error(ErrorKind::Format, msg, file, tensor);
}

// One open container while parsing.
struct Open {
  bool is_object = false;
  std::set<std::string> keys;  // objects: the keys seen so far
  std::size_t elements = 0;    // arrays: the elements seen so far
  std::string label;           // where it sits: "key" or "[i]" ("" for the root)
};

std::string path_of(const std::vector<Open>& open) {
  std::string p;
  for (std::size_t i = 1; i < open.size(); ++i) {
    const std::string& l = open[i].label;
    if (!p.empty() && l.front() != '[') p += '.';
    p += l;
  }
  return p;
}

}  // namespace

json parse_json_strict(std::string_view text, const std::string& file, DuplicateKeyNaming naming) {
  // The JSON library stops at a NUL byte; a NUL is never valid JSON text, anywhere.
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    fail(file, "NUL byte at offset " + std::to_string(nul) + " of the JSON text");
  std::vector<Open> open;          // open containers, innermost last
  std::vector<std::string> owner;  // per open object: the key it is the value of
  std::string last_key;
  // The label of a value starting now, in the innermost open container.
  const auto next_label = [&]() -> std::string {
    if (open.empty()) return {};
    if (open.back().is_object) return last_key;
    return "[" + std::to_string(open.back().elements++) + "]";
  };
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    switch (ev) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start: {
        if (depth >= kMaxJsonDepth)
          fail(file, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        Open o;
        o.is_object = ev == json::parse_event_t::object_start;
        o.label = next_label();
        if (o.is_object) {
          const bool root_object =
              std::none_of(open.begin(), open.end(), [](const Open& x) { return x.is_object; });
          owner.push_back(root_object ? std::string() : last_key);
        }
        open.push_back(std::move(o));
        break;
      }
      case json::parse_event_t::object_end:
        owner.pop_back();
        open.pop_back();
        break;
      case json::parse_event_t::array_end:
        open.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& k = parsed.get_ref<const std::string&>();
        last_key = k;
        if (!open.back().keys.insert(k).second) {
          if (naming == DuplicateKeyNaming::TopLevelEntry) {
            // Name the top-level entry (the tensor of a safetensors header) the duplicate sits in.
            const std::string entry = owner.size() >= 2 ? owner[1] : std::string();
            fail(file, "duplicate JSON key '" + k + "'" + (owner.size() > 2 ? " (nested)" : ""),
                 entry);
          }
          const std::string where = path_of(open);
          fail(file, "duplicate JSON key '" + k + "'" + (where.empty() ? "" : " in " + where));
        }
        break;
      }
      case json::parse_event_t::value:
        if (!open.empty() && !open.back().is_object) ++open.back().elements;
        break;
    }
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    fail(file, std::string("invalid JSON: ") + e.what());
  }
}

}  // namespace deltaedit::util
