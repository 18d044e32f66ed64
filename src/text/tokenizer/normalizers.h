// Normalizers: Sequence, Prepend, Replace (String/Regex), NFC, Strip. Internal.
#pragma once
#include <memory>
#include <string>

#include "text/tokenizer/common.h"

namespace deltaedit::text::detail {

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};

// Error(Unsupported) for another type, Error(Format) for malformed fields.
std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& file, int depth = 0);

// Canonical composition (Unicode NFC) of valid UTF-8.
std::string nfc(std::string_view s);

}  // namespace deltaedit::text::detail
