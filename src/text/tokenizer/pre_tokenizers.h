// Pre-tokenizers: Sequence, Split (String/Regex; Removed/Isolated/MergedWithPrevious/
// MergedWithNext/Contiguous; invert), ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit.
// Internal.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer/common.h"

namespace deltaedit::text::detail {

struct Piece {
  std::string text;
  bool at_start;  // begins at offset 0 of the input text
};
using Pieces = std::vector<Piece>;

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(Pieces& pieces) const = 0;
};

// Error(Unsupported) for another type, Error(Format) for malformed fields. `bytes` must outlive
// the result.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& file,
                                                 const ByteMap& bytes, int depth = 0);

}  // namespace deltaedit::text::detail
