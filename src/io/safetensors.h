// safetensors: strict header parsing and memory-mapped, bounds-checked tensor views.
// Every rule of RELIABILITY.md is enforced here; violations throw deltaedit::Error(Format)
// naming the file and, where there is one, the tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/dtype.h"
#include "util/strict_json.h"

namespace deltaedit::io {

inline constexpr uint64_t kMaxHeaderBytes = 100'000'000;
inline constexpr uint64_t kMaxJsonInt = uint64_t(1) << 53;
inline constexpr int kMaxJsonDepth = util::kMaxJsonDepth;

struct TensorInfo {
  std::string name;
  DType dtype{};
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // relative to the data buffer, end exclusive
  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct Header {
  std::vector<TensorInfo> tensors;  // in data-offset order
  std::map<std::string, std::string> metadata;
  uint64_t header_len = 0;          // N, the JSON length
  uint64_t data_offset() const { return 8 + header_len; }
  const TensorInfo* find(std::string_view name) const;
};

// Parse and validate a whole file image's header against the file size. `bytes` must hold at
// least the first min(file_size, 8 + N) bytes. `file` only names the source in errors.
Header parse_header(std::span<const std::byte> bytes, uint64_t file_size, const std::string& file);

// util::parse_json_strict as every parser here (header, index, config) uses it: a duplicate key
// names the top-level entry (the tensor) it sits in.
inline nlohmann::json parse_json_strict(std::string_view text, const std::string& file) {
  return util::parse_json_strict(text, file, util::DuplicateKeyNaming::TopLevelEntry);
}

// A read-only memory map of one safetensors file with a validated header.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);
  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const Header& header() const { return header_; }
  uint64_t file_size() const { return size_; }
  // Bytes of one tensor (unaligned; decode with memcpy or io::to_f32).
  std::span<const std::byte> data(const TensorInfo& t) const;
  std::span<const std::byte> data(std::string_view name) const;
  // Let the kernel drop the pages of a tensor already consumed (keeps RSS bounded when streaming).
  void release(const TensorInfo& t) const;
  // The same for bytes [offset, offset + bytes) of a tensor's data (clamped to the tensor): only
  // whole pages inside the range are dropped, so the neighbours' bytes stay mapped.
  void release_range(const TensorInfo& t, uint64_t offset, uint64_t bytes) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  Header header_;
  const std::byte* map_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace deltaedit::io
