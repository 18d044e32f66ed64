// A Hugging Face checkpoint: one safetensors file, a directory with model.safetensors, or a
// directory of shards with model.safetensors.index.json; plus config.json and the other files
// (tokenizer, generation config, chat templates) that outputs carry along.
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"
#include "io/tensor_source.h"

namespace deltaedit::io {

inline constexpr const char* kIndexName = "model.safetensors.index.json";
inline constexpr const char* kSingleName = "model.safetensors";

struct TensorRef {
  size_t file = 0;          // index into Checkpoint::files()
  const TensorInfo* info = nullptr;
};

class Checkpoint final : public TensorSource {
 public:
  static Checkpoint open(const std::filesystem::path& path);

  const std::filesystem::path& path() const override { return path_; }
  bool is_directory() const override { return is_dir_; }
  bool is_sharded() const override { return sharded_; }
  const std::vector<SafetensorsFile>& files() const { return files_; }
  // Every tensor name, in (file, offset) order.
  const std::vector<std::string>& names() const override { return names_; }
  bool contains(std::string_view name) const override { return index_.find(name) != index_.end(); }
  const TensorRef& ref(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const override { return *ref(name).info; }
  std::span<const std::byte> data(std::string_view name) const override;
  void release(std::string_view name) const override;
  // Drops the mapped pages of bytes [offset, offset + bytes) of a tensor once consumed.
  void release_range(std::string_view name, uint64_t offset, uint64_t bytes) const override;
  const std::string& file_of(std::string_view name) const;  // file name (no directory)
  std::vector<std::string> shard_names() const override { return file_names_; }
  size_t shard_of(std::string_view name) const override { return ref(name).file; }

  const std::optional<ModelConfig>& config() const override { return config_; }
  std::optional<std::filesystem::path> config_path() const override;
  // Non-weight files of the directory to carry into outputs (tokenizer*, generation_config.json,
  // chat templates, ...). config.json is listed separately; weights and the index are excluded.
  const std::vector<std::filesystem::path>& extra_files() const override { return extra_; }
  // Problems that do not stop reading (total_size mismatch, unreferenced shards).
  const std::vector<std::string>& warnings() const override { return warnings_; }
  uint64_t total_bytes() const override;
  uint64_t total_params() const override;
  // Files (shards, index, config) that make up this checkpoint, for output-overlap checks.
  std::vector<std::filesystem::path> input_paths() const override;

 private:
  std::filesystem::path path_;
  bool is_dir_ = false, sharded_ = false;
  std::vector<SafetensorsFile> files_;
  std::vector<std::string> file_names_;
  std::vector<std::string> names_;
  std::map<std::string, TensorRef, std::less<>> index_;
  std::optional<ModelConfig> config_;
  std::vector<std::filesystem::path> extra_;
  std::vector<std::string> warnings_;
};

// model.safetensors.index.json, validated: weight_map of tensor -> plain shard file name.
struct IndexFile {
  std::map<std::string, std::string> weight_map;
  std::optional<uint64_t> total_size;
};
IndexFile parse_index(std::string_view text, const std::string& file);

// Validates a shard name from an index: a plain `*.safetensors` file name in the same directory.
void check_shard_name(const std::string& name, const std::string& index_file);

// Shard file name in the Hugging Face convention: model-00001-of-00004.safetensors.
std::string shard_file_name(size_t i, size_t n);

}  // namespace deltaedit::io
