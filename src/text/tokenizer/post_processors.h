// Post-processors (single sequence only): TemplateProcessing, ByteLevel, Sequence,
// BertProcessing, RobertaProcessing. Internal.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "text/tokenizer/common.h"

namespace deltaedit::text::detail {

struct PostProcessor {
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<int32_t>& ids) const = 0;
  virtual std::optional<int32_t> leading_special() const { return std::nullopt; }
  virtual std::optional<int32_t> trailing_special() const { return std::nullopt; }
};

// Error(Unsupported) for another type, Error(Format) for malformed fields.
std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& file,
                                                   int depth = 0);

// The post-processor of a tokenizer.json without one: adds nothing.
std::unique_ptr<PostProcessor> make_noop_post_processor();

}  // namespace deltaedit::text::detail
