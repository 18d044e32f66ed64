// Where the engine reads the tensors of one input (the post side of an edit, of stats, of approx)
// from. A checkpoint is one source: data() hands out its memory-mapped bytes. A PEFT adapter over a
// base (io/peft.h) is another: its tensors are the base's, except those the adapter changes, whose
// bytes are formed when data() first asks for them and dropped again by release(). Consumers ask
// for one tensor at a time and release it when done, so at most the tensors in flight are formed.
//
// All members are safe to call concurrently for distinct tensors.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"

namespace deltaedit::io {

class TensorSource {
 public:
  virtual ~TensorSource() = default;

  // The path the user named (a file, a checkpoint directory, an adapter directory).
  virtual const std::filesystem::path& path() const = 0;
  // Every tensor name, in layout order.
  virtual const std::vector<std::string>& names() const = 0;
  virtual bool contains(std::string_view name) const = 0;
  virtual const TensorInfo& info(std::string_view name) const = 0;
  // The tensor's bytes in info(name).dtype (unaligned: decode with memcpy or io::to_f32).
  virtual std::span<const std::byte> data(std::string_view name) const = 0;
  // The consumer is done with the whole tensor / with bytes [offset, offset + bytes) of it.
  virtual void release(std::string_view name) const = 0;
  virtual void release_range(std::string_view name, uint64_t offset, uint64_t bytes) const = 0;
  // Bytes of memory data(name) allocates while the tensor is held (0 when it maps a file).
  virtual uint64_t formed_bytes(std::string_view name) const { return 0; }

  // How outputs laid out like this source are sharded: file names, and each tensor's file.
  virtual bool is_directory() const = 0;
  virtual bool is_sharded() const = 0;
  virtual std::vector<std::string> shard_names() const = 0;
  virtual size_t shard_of(std::string_view name) const = 0;
  // config.json (parsed, and its path to copy it byte for byte), and the other files outputs
  // carry along (tokenizer, generation config, ...).
  virtual const std::optional<ModelConfig>& config() const = 0;
  virtual std::optional<std::filesystem::path> config_path() const = 0;
  virtual const std::vector<std::filesystem::path>& extra_files() const = 0;
  // Problems that do not stop reading.
  virtual const std::vector<std::string>& warnings() const = 0;
  virtual uint64_t total_bytes() const = 0;
  virtual uint64_t total_params() const = 0;
  // Every file and directory this source reads, for output-overlap checks.
  virtual std::vector<std::filesystem::path> input_paths() const = 0;
};

}  // namespace deltaedit::io
