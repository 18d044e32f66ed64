#include "text/tokenizer/post_processors.h"

#include <sstream>

namespace deltaedit::text::detail {

namespace {

struct NoopPostProcessor : PostProcessor {
  void apply(std::vector<int32_t>&) const override {}
};

// Any of TemplateProcessing / BertProcessing / RobertaProcessing: fixed ids before and after.
struct WrapPostProcessor : PostProcessor {
  std::vector<int32_t> before, after;
  void apply(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before.begin(), before.end());
    ids.insert(ids.end(), after.begin(), after.end());
  }
  std::optional<int32_t> leading_special() const override {
    if (before.empty()) return std::nullopt;
    return before.front();
  }
  std::optional<int32_t> trailing_special() const override {
    if (after.empty()) return std::nullopt;
    return after.back();
  }
};

struct SequencePostProcessor : PostProcessor {
  std::vector<std::unique_ptr<PostProcessor>> items;
  void apply(std::vector<int32_t>& ids) const override {
    for (const auto& p : items) p->apply(ids);
  }
  std::optional<int32_t> leading_special() const override {
    for (const auto& p : items)
      if (auto v = p->leading_special()) return v;
    return std::nullopt;
  }
  std::optional<int32_t> trailing_special() const override {
    for (auto it = items.rbegin(); it != items.rend(); ++it)
      if (auto v = (*it)->trailing_special()) return v;
    return std::nullopt;
  }
};

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& file) {
  auto p = std::make_unique<WrapPostProcessor>();
  const json& specials = j.contains("special_tokens") ? j.at("special_tokens") : json::object();
  const auto special_ids = [&](const std::string& name) {
    auto it = specials.find(name);
    if (it == specials.end())
      fail(ErrorKind::Format, file,
           "TemplateProcessing uses special token '" + name + "' missing from special_tokens");
    std::vector<int32_t> ids;
    for (const auto& v : it->at("ids"))
      ids.push_back(
          static_cast<int32_t>(get_int(v, file, "special_tokens['" + name + "'] id", 0, kMaxId)));
    return ids;
  };
  const json& single = j.at("single");
  bool seen_sequence = false;
  const auto add_special = [&](const std::string& name) {
    auto ids = special_ids(name);
    auto& dst = seen_sequence ? p->after : p->before;
    dst.insert(dst.end(), ids.begin(), ids.end());
  };
  if (single.is_string()) {
    // Compact form: "<s> $A </s>" with optional ":type_id" suffixes.
    std::istringstream in(single.get<std::string>());
    std::string item;
    while (in >> item) {
      if (item.starts_with("$")) {
        seen_sequence = true;
        continue;
      }
      if (auto c = item.rfind(':'); c != std::string::npos && c > 0) item.resize(c);
      add_special(item);
    }
  } else {
    for (const auto& item : single) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        add_special(item.at("SpecialToken").at("id").get<std::string>());
      } else {
        fail(ErrorKind::Format, file,
             "TemplateProcessing item must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  }
  return p;
}

}  // namespace

std::unique_ptr<PostProcessor> make_noop_post_processor() {
  return std::make_unique<NoopPostProcessor>();
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& file,
                                                   int depth) {
  check_depth(depth, file, "post_processor");
  const std::string type = type_of(j, file, "post_processor");
  if (type == "TemplateProcessing") return make_template(j, file);
  if (type == "ByteLevel") return std::make_unique<NoopPostProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto p = std::make_unique<WrapPostProcessor>();
    p->before.push_back(
        static_cast<int32_t>(get_int(j.at("cls").at(1), file, type + " cls id", 0, kMaxId)));
    p->after.push_back(
        static_cast<int32_t>(get_int(j.at("sep").at(1), file, type + " sep id", 0, kMaxId)));
    return p;
  }
  if (type == "Sequence") {
    auto p = std::make_unique<SequencePostProcessor>();
    for (const auto& item : j.at("processors"))
      p->items.push_back(make_post_processor(item, file, depth + 1));
    return p;
  }
  fail(ErrorKind::Unsupported, file,
       unsupported_msg("post_processor", type,
                       "TemplateProcessing, ByteLevel, Sequence, BertProcessing, "
                       "RobertaProcessing"));
}

}  // namespace deltaedit::text::detail
