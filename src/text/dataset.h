// JSONL evaluation/training data (SPEC §4): records become token sequences with a mask of the
// tokens that are scored.
//   {"text": ...}                          every token scored
//   {"prompt": ..., "response": ...}       only response tokens scored; the prompt gets the
//                                          tokenizer's special-token template (e.g. BOS)
//   {"input_ids": [...]}                   pre-tokenized, every position scored
//   {"prompt", "chosen", "rejected"}       a DPO preference pair (two sequences)
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace deltaedit::text {

struct Sequence {
  std::vector<int32_t> ids;
  std::vector<uint8_t> scored;  // 1 = ids[i] is a scored target (predicted from i-1)
};

struct Record {
  size_t line = 0;             // 1-based line in the file
  std::string prompt;          // prompt/response and DPO records; for accuracy
  std::string response;        // reference response (accuracy takes its #### answer)
  Sequence seq;                // the scored sequence (DPO: the chosen one)
  std::optional<Sequence> rejected;  // DPO only
  bool preference = false;
};

struct DataOptions {
  size_t max_length = 0;  // 0 = no truncation; longer sequences keep their first tokens
  size_t limit = 0;       // 0 = every record
};

// Reads a JSONL file. Errors name the file and line: invalid JSON, unknown record shape, wrong
// field types, records with no scored token. `tok` may be null only for input_ids records.
std::vector<Record> load_jsonl(const std::filesystem::path& path, const Tokenizer* tok, const DataOptions& opt = {});
// Same from text already in memory (`source` names it in errors).
std::vector<Record> parse_jsonl(std::string_view text, const std::string& source, const Tokenizer* tok,
                                const DataOptions& opt = {});

}  // namespace deltaedit::text
