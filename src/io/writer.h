// Streaming safetensors writer and the staging protocol of RELIABILITY.md.
//
// The header is planned from names, dtypes and shapes up front; tensors are then written one at a
// time (in any order, each at its planned offset), so peak memory is about one tensor.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "io/safetensors.h"

namespace deltaedit::io {

struct PlannedTensor {
  std::string name;
  DType dtype{};
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// Reference-compatible layout: sorted by dtype size (largest first) then name, contiguous.
// Returns the planned TensorInfos (in layout order) and the serialized, space-padded header JSON.
struct Layout {
  std::vector<TensorInfo> tensors;
  std::string header_json;  // length is a multiple of 8
  uint64_t file_size() const;
};
Layout plan_layout(std::vector<PlannedTensor> tensors, const std::map<std::string, std::string>& metadata);

// Writes one file. Handles short writes and EINTR; ENOSPC/EDQUOT/EFBIG are fatal Io errors.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::filesystem::path& path, std::vector<PlannedTensor> tensors,
                    std::map<std::string, std::string> metadata);
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  const Layout& layout() const { return layout_; }
  // Write a whole tensor, or a piece of it at a byte offset within the tensor.
  void write(std::string_view name, std::span<const std::byte> bytes, uint64_t offset_in_tensor = 0);
  // Check every byte of every tensor was written, fsync and close (checking close()).
  void finish();

 private:
  const TensorInfo& find(std::string_view name) const;
  std::filesystem::path path_;
  Layout layout_;
  std::map<std::string, size_t, std::less<>> pos_;
  std::vector<uint64_t> written_;
  int fd_ = -1;
};

// Cooperative interruption: SIGINT/SIGTERM set a flag that long loops poll (check_interrupted()
// throws Error(Interrupted)); staging directories are removed by their destructors.
void install_signal_handlers();
bool interrupted();
void check_interrupted();

// A staging directory beside the target (same filesystem). Files are written inside; commit()
// fsyncs everything, validates, renames the directory (or a single file) onto the target and
// fsyncs the parent. Destruction without commit removes the staging directory.
class Staging {
 public:
  // Refuses when the target exists, or when it is (same device+inode) one of `inputs` or
  // contains one of them; checks `planned_bytes` of free space.
  Staging(const std::filesystem::path& target, const std::vector<std::filesystem::path>& inputs,
          uint64_t planned_bytes);
  ~Staging();
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  const std::filesystem::path& dir() const { return dir_; }
  const std::filesystem::path& target() const { return target_; }
  // Copy a file byte for byte into the staging directory (tokenizer, generation config, ...).
  void copy_in(const std::filesystem::path& src, const std::string& name);
  void write_text(const std::string& name, const std::string& text);
  // Rename the staging directory onto the target directory.
  void commit_dir();
  // Rename the single file `name` inside staging onto the target path; remove staging.
  void commit_file(const std::string& name);

 private:
  void fsync_all();
  std::filesystem::path target_, dir_;
  bool done_ = false;
};

// Write a whole in-memory file to `fd`-less path with the same short-write/EINTR loop + fsync.
void write_file_durably(const std::filesystem::path& path, std::span<const std::byte> bytes);
void fsync_path(const std::filesystem::path& path, bool directory);

}  // namespace deltaedit::io
