#include "text/tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "text/tokenizer/added_tokens.h"
#include "text/tokenizer/common.h"
#include "text/tokenizer/decoders.h"
#include "text/tokenizer/models.h"
#include "text/tokenizer/normalizers.h"
#include "text/tokenizer/post_processors.h"
#include "text/tokenizer/pre_tokenizers.h"
#include "util/error.h"
#include "util/read_file.h"
#include "util/strict_json.h"

namespace deltaedit::text {

using nlohmann::json;

// The pipeline, as the reference library runs it: added tokens are split off (the text between
// them normalized), pre-tokenized, encoded by the model, and post-processed; decoding maps ids
// to token strings and runs the decoder.
struct Tokenizer::Impl {
  std::string file;
  detail::ByteMap bytes;
  std::unique_ptr<detail::Normalizer> normalizer;
  std::unique_ptr<detail::PreTokenizer> pre_tokenizer;
  std::unique_ptr<detail::BpeModel> model;
  std::unique_ptr<detail::PostProcessor> post;
  std::unique_ptr<detail::Decoder> decoder;
  detail::AddedVocabulary added;
  std::optional<int32_t> bos, eos;
  std::size_t vocab_size = 0;
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

namespace {

// Name of a bos_token / eos_token entry of tokenizer_config.json (a string or {"content": ...}).
std::optional<std::string> config_token(const json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && it->at("content").is_string())
    return it->at("content").get<std::string>();
  return std::nullopt;
}

}  // namespace

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) file = path / "tokenizer.json";
  if (!std::filesystem::exists(file, ec))
    throw Error(ErrorKind::Io,
                std::filesystem::is_directory(path, ec) ? "directory has no tokenizer.json"
                                                        : "tokenizer file does not exist",
                file.string());
  Tokenizer tok = from_json_string(util::read_file(file), file.string());

  // Optional tokenizer_config.json next to it: names of the BOS / EOS tokens.
  const auto cfg_path = file.parent_path() / "tokenizer_config.json";
  if (std::filesystem::exists(cfg_path, ec)) {
    const json cfg = util::parse_json_strict(util::read_file(cfg_path), cfg_path.string());
    if (!cfg.is_object())
      throw Error(ErrorKind::Format, "top level is not a JSON object", cfg_path.string());
    if (auto name = config_token(cfg, "bos_token")) {
      if (auto id = tok.token_to_id(*name)) tok.impl_->bos = id;
    }
    if (auto name = config_token(cfg, "eos_token")) {
      if (auto id = tok.token_to_id(*name)) tok.impl_->eos = id;
    }
  }
  return tok;
}

Tokenizer Tokenizer::from_json_string(std::string_view text, std::string source) {
  auto impl = std::make_unique<Impl>();
  impl->file = source;
  const std::string& file = impl->file;
  const json j = util::parse_json_strict(text, file);
  if (!j.is_object()) throw Error(ErrorKind::Format, "top level is not a JSON object", file);
  try {
    if (!j.contains("model")) throw Error(ErrorKind::Format, "has no 'model' section", file);
    const auto section = [&](const char* key) -> const json* {
      auto it = j.find(key);
      return (it == j.end() || it->is_null()) ? nullptr : &*it;
    };
    if (const json* n = section("normalizer")) impl->normalizer = detail::make_normalizer(*n, file);
    if (const json* p = section("pre_tokenizer"))
      impl->pre_tokenizer = detail::make_pre_tokenizer(*p, file, impl->bytes);
    impl->model = std::make_unique<detail::BpeModel>(j.at("model"), file);
    if (const json* p = section("post_processor"))
      impl->post = detail::make_post_processor(*p, file);
    if (const json* d = section("decoder"))
      impl->decoder = detail::make_decoder(*d, file, impl->bytes);
    impl->added = detail::AddedVocabulary(section("added_tokens"), impl->normalizer.get(), file);
    impl->vocab_size = std::max(impl->model->id_bound(), impl->added.id_bound());
    if (!impl->post) impl->post = detail::make_noop_post_processor();
    impl->bos = impl->post->leading_special();
    impl->eos = impl->post->trailing_special();
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::Format, std::string("unexpected JSON structure: ") + e.what(), file);
  }
  Tokenizer tok(std::move(impl));
  // Without a template, fall back on the customary names.
  if (!tok.impl_->bos)
    for (const char* name : {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"})
      if (auto id = tok.token_to_id(name); id && tok.is_special(*id)) {
        tok.impl_->bos = id;
        break;
      }
  if (!tok.impl_->eos)
    for (const char* name : {"<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"})
      if (auto id = tok.token_to_id(name); id && tok.is_special(*id)) {
        tok.impl_->eos = id;
        break;
      }
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  if (const auto bad = detail::utf8_invalid_offset(text); bad != std::string_view::npos)
    throw Error(ErrorKind::Usage,
                "text to encode is not valid UTF-8 (byte offset " + std::to_string(bad) + ")",
                m.file);
  std::vector<int32_t> ids;
  detail::Pieces pieces;
  for (auto& seg : m.added.extract_and_normalize(text)) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    pieces.clear();
    pieces.push_back({std::move(seg.text), seg.at_start});
    if (m.pre_tokenizer) m.pre_tokenizer->apply(pieces);
    for (const auto& p : pieces) m.model->encode_word(p.text, ids, m.file);
  }
  if (add_special_tokens) m.post->apply(ids);
  return ids;
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (const std::string* t = impl_->added.id_to_token(id)) return *t;
  if (const std::string* t = impl_->model->id_to_token(id)) return *t;
  return std::nullopt;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto id = impl_->added.token_to_id(token)) return id;
  return impl_->model->token_to_id(token);
}

bool Tokenizer::is_special(int32_t id) const { return impl_->added.is_special(id); }

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> toks;
  toks.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special_tokens && is_special(id)) continue;
    if (auto t = id_to_token(id)) toks.push_back(std::move(*t));
  }
  if (!impl_->decoder) {
    std::string r;
    for (std::size_t i = 0; i < toks.size(); ++i) {
      if (i) r += ' ';
      r += toks[i];
    }
    return r;
  }
  impl_->decoder->apply(toks);
  std::string r;
  for (const auto& t : toks) r += t;
  return r;
}

std::vector<std::string> Tokenizer::tokens(std::span<const int32_t> ids) const {
  std::vector<std::string> out;
  out.reserve(ids.size());
  for (int32_t id : ids) {
    auto t = id_to_token(id);
    if (!t)
      throw Error(ErrorKind::Usage, "token id " + std::to_string(id) + " is not in the vocabulary",
                  impl_->file);
    out.push_back(std::move(*t));
  }
  return out;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::size_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

}  // namespace deltaedit::text
