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

// Writes one file through a descriptor it does not own (see Staging::create). Handles short
// writes and EINTR; ENOSPC/EDQUOT/EFBIG are fatal Io errors. Thread-safe for distinct tensors.
class SafetensorsWriter {
 public:
  SafetensorsWriter(int fd, std::string label, std::vector<PlannedTensor> tensors,
                    std::map<std::string, std::string> metadata);
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  const Layout& layout() const { return layout_; }
  // Write a whole tensor, or a piece of it at a byte offset within the tensor.
  void write(std::string_view name, std::span<const std::byte> bytes, uint64_t offset_in_tensor = 0);
  // Check every byte of every tensor was written, then fsync.
  void finish();

 private:
  const TensorInfo& find(std::string_view name) const;
  std::string label_;
  Layout layout_;
  std::map<std::string, size_t, std::less<>> pos_;
  std::vector<std::atomic<uint64_t>> written_;
  int fd_ = -1;
};

// Positional write loop used by every writer here.
void pwrite_all(int fd, const std::byte* p, uint64_t n, uint64_t off, const std::string& label);

// Cooperative interruption: SIGINT/SIGTERM set a flag that long loops poll (check_interrupted()
// throws Error(Interrupted)); staging directories are removed by their destructors.
void install_signal_handlers();
bool interrupted();
void check_interrupted();

// Output staging (RELIABILITY.md "Writing"). Files are created as anonymous files in the target's
// directory (O_TMPFILE) where the filesystem allows, so a killed process leaves nothing behind;
// elsewhere as named files in a staging directory beside the target. commit_dir() links them into
// a staging directory, fsyncs, lets the caller validate, and renames it onto the target in one
// step; destruction without commit removes everything. Staging directories of dead processes
// from earlier runs are removed when a new Staging for the same target starts.
class Staging {
 public:
  // Refuses when the target exists, or when it is (same device+inode) one of `inputs` or
  // contains one of them; checks `planned_bytes` of free space.
  Staging(const std::filesystem::path& target, const std::vector<std::filesystem::path>& inputs,
          uint64_t planned_bytes);
  ~Staging();
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;

  const std::filesystem::path& target() const { return target_; }
  // A new empty file `name` (read-write); the descriptor stays owned by the Staging.
  int create(const std::string& name);
  // Copy a file byte for byte into the output (tokenizer, generation config, ...).
  void copy_in(const std::filesystem::path& src, const std::string& name);
  void write_text(const std::string& name, const std::string& text);
  // Give every file its name inside the staging directory and fsync; returns that directory
  // (for validation before commit_dir()).
  std::filesystem::path materialize();
  // Rename the staging directory onto the target directory; fsync the parent.
  void commit_dir();
  // The single file `name` becomes the target path itself (no directory).
  void commit_file(const std::string& name);
  bool uses_anonymous_files() const { return tmpfile_ok_; }

 private:
  struct File {
    std::string name;
    int fd;
    bool anonymous;
  };
  void ensure_dir();
  std::filesystem::path target_, parent_, dir_;
  std::vector<File> files_;
  bool tmpfile_ok_ = true, dir_made_ = false, done_ = false;
};

void fsync_path(const std::filesystem::path& path, bool directory);

// One small output file (a report page, a CSV, a JSON summary) by the same protocol as a
// checkpoint: written beside `path` under a staging name, fsynced, renamed onto `path` (replacing
// an older version of it) and the directory fsynced. Readers see the old file or the new one,
// never a part; an interrupted or failed write leaves no staging file behind (one of a killed
// process is removed by the next write of the same path). The directory must exist.
void replace_file(const std::filesystem::path& path, std::string_view bytes);


}  // namespace deltaedit::io
