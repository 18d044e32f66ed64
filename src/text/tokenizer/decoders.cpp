#include "text/tokenizer/decoders.h"

#include <algorithm>
#include <optional>

namespace deltaedit::text::detail {

namespace {

struct SequenceDecoder : Decoder {
  std::vector<std::unique_ptr<Decoder>> items;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : items) d->apply(tokens);
  }
};

struct ByteLevelDecoder : Decoder {
  const ByteMap* bytes = nullptr;
  void apply(std::vector<std::string>& tokens) const override {
    std::string raw;
    for (const auto& t : tokens) {
      const std::size_t mark = raw.size();
      bool all = true;
      for (std::size_t i = 0; i < t.size();) {
        const char32_t c = utf8_next(t, i);
        const int b = c < bytes->char_to_byte.size() ? bytes->char_to_byte[c] : -1;
        if (b < 0) {
          all = false;
          break;
        }
        raw.push_back(static_cast<char>(b));
      }
      if (!all) {
        raw.resize(mark);
        raw += t;
      }
    }
    tokens.assign(1, utf8_lossy(raw));
  }
};

struct ReplaceDecoder : Decoder {
  std::unique_ptr<Pattern> pattern;
  std::string content;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern->replace_all(t, content);
  }
};

struct ByteFallbackDecoder : Decoder {
  static std::optional<uint8_t> byte_of(const std::string& t) {
    if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return std::nullopt;
    const auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int lo = hex(t[4]);
    if (lo < 0) return std::nullopt;
    if (t[3] == '+') return static_cast<uint8_t>(lo);
    const int hi = hex(t[3]);
    if (hi < 0) return std::nullopt;
    return static_cast<uint8_t>(hi * 16 + lo);
  }
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;
    const auto flush = [&] {
      if (pending.empty()) return;
      if (utf8_invalid_offset(pending) == std::string::npos) {
        out.push_back(pending);
      } else {
        for (std::size_t k = 0; k < pending.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
    };
    for (auto& t : tokens) {
      if (auto b = byte_of(t)) {
        pending.push_back(static_cast<char>(*b));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDecoder : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

struct StripDecoder : Decoder {
  char32_t content = ' ';
  std::size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::size_t> bounds;  // byte offset of each character, plus the end
      for (std::size_t i = 0; i < t.size();) {
        bounds.push_back(i);
        utf8_next(t, i);
      }
      const std::size_t nchars = bounds.size();
      bounds.push_back(t.size());
      const auto char_at = [&](std::size_t k) {
        std::size_t i = bounds[k];
        return utf8_next(t, i);
      };
      std::size_t cut_start = 0;
      for (std::size_t k = 0; k < std::min(start, nchars) && char_at(k) == content; ++k)
        cut_start = k + 1;
      std::size_t cut_stop = nchars;
      for (std::size_t k = 0; k < std::min(stop, nchars); ++k) {
        const std::size_t idx = nchars - k - 1;
        if (char_at(idx) != content) break;
        cut_stop = idx;
      }
      if (cut_stop < cut_start) cut_stop = cut_start;
      t = t.substr(bounds[cut_start], bounds[cut_stop] - bounds[cut_start]);
    }
  }
};

struct MetaspaceDecoder : Decoder {
  std::string replacement = "\xE2\x96\x81";
  bool strip_first = true;
  void apply(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      const std::string& t = tokens[i];
      const std::string_view with = (i == 0 && strip_first) ? "" : " ";
      std::string r;
      r.reserve(t.size());
      std::size_t prev = 0;
      for (std::size_t p = t.find(replacement); p != std::string::npos;
           p = t.find(replacement, prev)) {
        r.append(t, prev, p - prev);
        r.append(with);
        prev = p + replacement.size();
      }
      r.append(t, prev);
      tokens[i] = std::move(r);
    }
  }
};

char32_t single_char(const json& j, const std::string& file, const std::string& where) {
  const std::string s = j.get<std::string>();
  std::size_t i = 0;
  if (s.empty() || utf8_invalid_offset(s) != std::string::npos)
    fail(ErrorKind::Format, file, where + " must be one character");
  const char32_t c = utf8_next(s, i);
  if (i != s.size()) fail(ErrorKind::Format, file, where + " must be one character");
  return c;
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& file, const ByteMap& bytes,
                                      int depth) {
  check_depth(depth, file, "decoder");
  const std::string type = type_of(j, file, "decoder");
  if (type == "Sequence") {
    auto d = std::make_unique<SequenceDecoder>();
    for (const auto& item : j.at("decoders"))
      d->items.push_back(make_decoder(item, file, bytes, depth + 1));
    return d;
  }
  if (type == "ByteLevel") {
    auto d = std::make_unique<ByteLevelDecoder>();
    d->bytes = &bytes;
    return d;
  }
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->pattern = std::make_unique<Pattern>(j.at("pattern"), file, "Replace decoder");
    d->content = j.at("content").get<std::string>();
    return d;
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = single_char(j.at("content"), file, "Strip decoder content");
    d->start = static_cast<std::size_t>(get_int(j.at("start"), file, "Strip start", 0, INT32_MAX));
    d->stop = static_cast<std::size_t>(get_int(j.at("stop"), file, "Strip stop", 0, INT32_MAX));
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    if (j.contains("replacement")) d->replacement = j.at("replacement").get<std::string>();
    if (d->replacement.empty())
      fail(ErrorKind::Format, file, "Metaspace decoder replacement is empty");
    if (j.contains("prepend_scheme") && !j.at("prepend_scheme").is_null())
      d->strip_first = j.at("prepend_scheme").get<std::string>() != "never";
    else
      d->strip_first = get_bool(j, "add_prefix_space", true);
    return d;
  }
  fail(ErrorKind::Unsupported, file,
       unsupported_msg("decoder", type,
                       "Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace"));
}

}  // namespace deltaedit::text::detail
