// Byte-level BPE trainer that writes a Hugging Face tokenizer.json for the zoo models.
//
// Layout of the vocabulary (ids):
//   0            "<|endoftext|>"  (special; BOS, EOS and document separator)
//   1            "<|pad|>"        (special)
//   2 .. 257     the 256 bytes, in byte order, as GPT-2 byte-level characters
//   258 ..       one token per merge, in merge order
// Pipeline: no normalizer; pre-tokenizer = Split(kZooSplitPattern, Isolated) then ByteLevel
// (no prefix space, no regex); model = BPE; post-processor = TemplateProcessing adding
// "<|endoftext|>" in front (BOS) when special tokens are requested; decoder = ByteLevel.
// The split pattern is Qwen2's: every digit is its own pre-token, so numbers are read and written
// digit by digit.
//
// Training counts the unique pre-tokens of the input texts, then repeatedly merges the most
// frequent adjacent symbol pair; ties go to the lexicographically smallest pair, comparing the raw
// bytes of the left token and then of the right token. The result is a pure function of the
// multiset of pre-tokens and the options.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace deltaedit::zoo {

inline constexpr std::string_view kEndOfText = "<|endoftext|>";
inline constexpr std::string_view kPad = "<|pad|>";
inline constexpr std::string_view kZooSplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct BpeOptions {
  // Total vocabulary: 2 special tokens + 256 bytes + merges. At least 258.
  std::size_t vocab_size = 768;
  // Pairs seen fewer times than this are never merged; training stops early (with a smaller
  // vocabulary) when no pair is left at this frequency.
  uint64_t min_frequency = 2;
};

struct BpeModel {
  // Token strings in GPT-2 byte-level form, indexed by id (special tokens included).
  std::vector<std::string> vocab;
  // Merges in rank order, as byte-level token strings.
  std::vector<std::pair<std::string, std::string>> merges;
};

// GPT-2 byte-level character (UTF-8) of byte b.
std::string byte_level_char(unsigned char b);

// Splits `text` into pre-tokens with kZooSplitPattern (matches and the gaps between them).
std::vector<std::string> zoo_pretokenize(std::string_view text);

// Trains on the texts. Throws Error(Usage) when vocab_size < 258 or a text is not valid UTF-8.
BpeModel train_bpe(std::span<const std::string> texts, const BpeOptions& options = {});

// The tokenizer.json text of a trained model (Hugging Face layout, 2-space indent).
std::string bpe_tokenizer_json(const BpeModel& model);

// tokenizer_config.json naming "<|endoftext|>" as BOS/EOS and "<|pad|>" as PAD.
std::string bpe_tokenizer_config_json();

// Writes tokenizer.json and tokenizer_config.json into `dir` (created when missing).
// Throws Error(Io) on failure.
void write_bpe_tokenizer(const std::filesystem::path& dir, const BpeModel& model);

// The default tokenizer training mix: corpus_text(seed, corpus_bytes) as one text plus the prompt
// and response of the first n_task_records train problems of make_task_splits(seed, ..., n_test).
std::vector<std::string> zoo_tokenizer_texts(uint64_t seed, std::size_t corpus_bytes,
                                             std::size_t n_task_records, std::size_t n_test = 500);

}  // namespace deltaedit::zoo
