#include "engine/layout.h"

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/writer.h"
#include "util/checked.h"
#include "util/error.h"

using nlohmann::json;

namespace deltaedit::engine {

json OutLayout::to_json() const {
  json j{{"sharded", sharded}, {"files", files}, {"tensors", json::array()}};
  for (const auto& t : tensors)
    j["tensors"].push_back({{"name", t.name},
                            {"dtype", io::dtype_name(t.dtype)},
                            {"shape", t.shape},
                            {"shard", t.shard}});
  return j;
}
OutLayout OutLayout::from_json(const json& j, const std::string& file) {
  OutLayout L;
  uint64_t total = 0;
  try {
    L.sharded = j.at("sharded").get<bool>();
    L.files = j.at("files").get<std::vector<std::string>>();
    for (const auto& t : j.at("tensors")) {
      auto d = io::parse_dtype(t.at("dtype").get<std::string>());
      if (!d) throw Error(ErrorKind::Format, "unknown dtype in layout", file);
      OutTensor o{t.at("name").get<std::string>(), *d, t.at("shape").get<std::vector<int64_t>>(),
                  t.at("shard").get<size_t>()};
      if (o.shard >= L.files.size())
        throw Error(ErrorKind::Format, "layout names a missing shard", file, o.name);
      // Every size computed later from these shapes is then in range.
      total = util::checked_add(
          total, util::checked_nbytes(o.shape, io::dtype_bits(o.dtype), file, o.name),
          "checkpoint size", file, o.name);
      L.tensors.push_back(std::move(o));
    }
    for (const auto& f : L.files) io::check_shard_name(f, file);
  } catch (const json::exception& e) {
    throw Error(ErrorKind::Format, std::string("malformed layout: ") + e.what(), file);
  }
  return L;
}

ShardPlan OutLayout::shard_plan() const {
  ShardPlan p;
  p.files = files;
  p.index = sharded;
  for (const auto& t : tensors) p.shard_of.push_back(t.shard);
  return p;
}

OutLayout plan_layout_like(const io::TensorSource& post, const std::vector<std::string>& names,
                           const std::function<io::DType(const std::string&)>& dtype_of,
                           std::optional<uint64_t> max_shard) {
  OutLayout L;
  for (const auto& n : names) {
    const auto& ti = post.info(n);
    L.tensors.push_back({n, dtype_of(n), ti.shape, 0});
  }
  // A single-file post stays one file up to the Hugging Face default shard size (5 GB); beyond
  // it the output is sharded at that size. A sharded post keeps its layout unless asked.
  uint64_t total = 0;
  for (const auto& t : L.tensors) total += t.nbytes();
  if (!max_shard && !post.is_sharded() && total > kDefaultMaxShard) max_shard = kDefaultMaxShard;
  if (max_shard) {
    std::vector<uint64_t> sizes;
    for (auto& t : L.tensors) {
      if (sizes.empty() || (sizes.back() > 0 && sizes.back() + t.nbytes() > *max_shard))
        sizes.push_back(0);
      t.shard = sizes.size() - 1;
      sizes.back() += t.nbytes();
    }
    if (sizes.empty()) sizes.push_back(0);
    L.sharded = sizes.size() > 1;
    for (size_t i = 0; i < sizes.size(); ++i)
      L.files.push_back(L.sharded ? io::shard_file_name(i + 1, sizes.size()) : io::kSingleName);
  } else if (post.is_sharded()) {
    L.sharded = true;
    L.files = post.shard_names();
    for (auto& t : L.tensors) t.shard = post.shard_of(t.name);
  } else {
    L.files.push_back(io::kSingleName);
  }
  return L;
}

}  // namespace deltaedit::engine
