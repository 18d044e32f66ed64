// Planning an edit before any tensor data is read: the op chain, the opened inputs, the pairing
// of their tensors, the output layout, per tensor whether it is edited, streamed or copied and the
// buffer bytes it holds, the provenance and the plan report (what --dry-run prints).
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/edit_engine.h"
#include "engine/layout.h"

namespace deltaedit::engine {

struct EditTensorPlan {
  bool edited = false;    // an op touches it: W_pre + Δ'
  bool streamed = false;  // edited block by block (pointwise and observing ops only)
  uint64_t need = 0;      // buffer bytes it holds while in flight
  uint64_t shared = 0;    // resized vocabulary: the elements shared with base (edited); the rest
                          // are post's added rows, copied (0 = not resized)
};

struct EditPlan {
  OpChain chain;
  std::unique_ptr<io::Checkpoint> base;  // outlives post (an adapter reads it)
  std::unique_ptr<io::TensorSource> post;
  std::optional<io::SafetensorsFile> grad;
  OutLayout layout;
  std::vector<EditTensorPlan> tensors;  // by position in layout.tensors
  nlohmann::json skipped = nlohmann::json::array();
  nlohmann::json provenance;  // tool, version, inputs, seed, ops, filters, dtype
  nlohmann::json report;      // EditResult::plan
  uint64_t out_bytes = 0;
  unsigned workers = 1;
};

EditPlan plan_edit(const EditRequest& req);

// The safetensors __metadata__ of an edit's shards.
std::map<std::string, std::string> shard_metadata(const nlohmann::json& provenance);

}  // namespace deltaedit::engine
