// Hugging Face `tokenizer.json` tokenizer: loads the JSON description (added tokens, normalizer,
// pre-tokenizer, BPE model, post-processor, decoder) and encodes/decodes exactly as the reference
// `tokenizers` library does for the supported components. No libtorch.
//
// Supported components (anything else is rejected at load with Error(Unsupported)):
//   normalizer:     Sequence, Prepend, Replace (String/Regex), NFC, Strip
//   pre_tokenizer:  Sequence, Split (String/Regex; Removed/Isolated/MergedWithPrevious/
//                   MergedWithNext/Contiguous; invert), ByteLevel, Metaspace, Digits,
//                   Whitespace, WhitespaceSplit
//   model:          BPE (merges as "a b" strings or ["a","b"] pairs, byte_fallback, unk_token,
//                   fuse_unk, ignore_merges, continuing_subword_prefix, end_of_word_suffix)
//   post_processor: TemplateProcessing, ByteLevel, Sequence, BertProcessing, RobertaProcessing
//   decoder:        Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace deltaedit::text {

class Tokenizer {
 public:
  // `path` is a tokenizer.json file or a directory holding one. When a tokenizer_config.json sits
  // next to it, its bos_token / eos_token names are used for bos_id() / eos_id().
  // Throws Error(Io) when the file cannot be read, Error(Format) for malformed JSON or fields,
  // Error(Unsupported) for components this implementation does not handle.
  static Tokenizer load(const std::filesystem::path& tokenizer_json_or_model_dir);

  // Same as load() from the bytes of a tokenizer.json; `source` names it in error messages.
  static Tokenizer from_json_string(std::string_view json, std::string source = "<memory>");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text must be valid UTF-8 (else Error(Usage)). Added/special tokens written in the text are
  // recognised; add_special_tokens applies the post-processor (e.g. the BOS template).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;

  // Unknown ids are skipped, like the reference implementation. Invalid UTF-8 produced by
  // byte-level tokens is replaced by U+FFFD.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // Token strings of the ids; throws Error(Usage) for an id that has no token.
  std::vector<std::string> tokens(std::span<const int32_t> ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;

  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

  // Highest id of the model vocabulary or of the added tokens, plus one.
  std::size_t vocab_size() const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace deltaedit::text
