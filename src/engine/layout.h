// The layout of an edit's output: which tensor goes in which shard, with which dtype. Laid out
// like the post checkpoint (its shards, or one file up to the Hugging Face default shard size),
// or resharded at a given size; a pack records it so that `apply` rebuilds the same files.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "io/tensor_source.h"

namespace deltaedit::engine {

inline constexpr uint64_t kDefaultMaxShard = 5'000'000'000;

// The output checkpoint's shape: which tensor goes in which shard, with which dtype.
struct OutTensor {
  std::string name;
  io::DType dtype{};
  std::vector<int64_t> shape;
  size_t shard = 0;
  uint64_t nbytes() const { return io::PlannedTensor{name, dtype, shape}.nbytes(); }
};
struct OutLayout {
  bool sharded = false;
  std::vector<std::string> files;
  std::vector<OutTensor> tensors;  // in post order
  nlohmann::json to_json() const;
  static OutLayout from_json(const nlohmann::json& j, const std::string& file);
  ShardPlan shard_plan() const;
};

OutLayout plan_layout_like(const io::TensorSource& post, const std::vector<std::string>& names,
                           const std::function<io::DType(const std::string&)>& dtype_of,
                           std::optional<uint64_t> max_shard);

}  // namespace deltaedit::engine
