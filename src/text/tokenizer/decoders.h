// Decoders: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace. Each maps the
// list of token strings to a new list; the decoded text is their concatenation. Internal.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer/common.h"

namespace deltaedit::text::detail {

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

// Error(Unsupported) for another type, Error(Format) for malformed fields. `bytes` must outlive
// the result.
std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& file, const ByteMap& bytes,
                                      int depth = 0);

}  // namespace deltaedit::text::detail
