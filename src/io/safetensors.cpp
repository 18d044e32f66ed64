#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "util/error.h"

namespace deltaedit::io {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& file, const std::string& msg, const std::string& tensor = {}) {
  throw Error(ErrorKind::Format, msg, file, tensor);
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

uint64_t json_uint(const json& v, const std::string& file, const std::string& tensor, const char* what) {
  if (v.is_number_unsigned()) {
    uint64_t x = v.get<uint64_t>();
    if (x > kMaxJsonInt) fail(file, std::string(what) + " value above 2^53", tensor);
    return x;
  }
  if (v.is_number_integer()) fail(file, std::string(what) + " value is negative", tensor);
  if (v.is_number_float()) fail(file, std::string(what) + " value is not an integer", tensor);
  fail(file, std::string(what) + " value is not a number", tensor);
}

}  // namespace

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= uint64_t(d);
  return n;
}

const TensorInfo* Header::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

Header parse_header(std::span<const std::byte> bytes, uint64_t file_size, const std::string& file) {
  if (file_size < 8 || bytes.size() < 8)
    fail(file, "file is shorter than 8 bytes: not a safetensors file");
  static constexpr std::string_view kLfs = "version https://git-lfs";
  if (bytes.size() >= kLfs.size() &&
      std::memcmp(bytes.data(), kLfs.data(), kLfs.size()) == 0)
    fail(file, "this is a git-lfs pointer, not the weights: run `git lfs pull` in its repository");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint64_t(std::to_integer<uint8_t>(bytes[size_t(i)]));
  if (n > kMaxHeaderBytes)
    fail(file, "header length " + std::to_string(n) + " exceeds the 100,000,000-byte limit");
  if (8 + n > file_size)
    fail(file, "header length " + std::to_string(n) + " runs past the end of the file (" +
                   std::to_string(file_size) + " bytes): truncated or not a safetensors file");
  if (bytes.size() < 8 + n) fail(file, "internal: header bytes not provided");
  std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, size_t(n));
  json root = parse_json_strict(text, file);
  if (!root.is_object()) fail(file, "header is not a JSON object");

  Header h;
  h.header_len = n;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(file, "__metadata__ is not an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail(file, "__metadata__ value for '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) fail(file, "entry is not an object", name);
    TensorInfo t;
    t.name = name;
    bool has_dtype = false, has_shape = false, has_offsets = false;
    for (auto f = v.begin(); f != v.end(); ++f) {
      const std::string& key = f.key();
      const json& fv = f.value();
      if (key == "dtype") {
        if (!fv.is_string()) fail(file, "dtype is not a string", name);
        auto d = parse_dtype(fv.get<std::string>());
        if (!d) fail(file, "unknown dtype '" + fv.get<std::string>() + "'", name);
        t.dtype = *d;
        has_dtype = true;
      } else if (key == "shape") {
        if (!fv.is_array()) fail(file, "shape is not an array", name);
        for (const auto& d : fv) t.shape.push_back(int64_t(json_uint(d, file, name, "shape")));
        has_shape = true;
      } else if (key == "data_offsets") {
        if (!fv.is_array() || fv.size() != 2)
          fail(file, "data_offsets must be exactly two integers", name);
        t.begin = json_uint(fv[0], file, name, "data_offsets");
        t.end = json_uint(fv[1], file, name, "data_offsets");
        has_offsets = true;
      } else {
        fail(file, "unknown field '" + key + "' in tensor entry", name);
      }
    }
    if (!has_dtype || !has_shape || !has_offsets)
      fail(file, std::string("entry lacks ") + (!has_dtype ? "dtype" : !has_shape ? "shape" : "data_offsets"),
           name);
    if (t.end < t.begin) fail(file, "data_offsets end < begin", name);
    uint64_t numel = 1;
    for (int64_t d : t.shape)
      if (!checked_mul(numel, uint64_t(d), numel)) fail(file, "shape product overflows 64 bits", name);
    uint64_t bits = 0;
    if (!checked_mul(numel, dtype_bits(t.dtype), bits)) fail(file, "tensor size overflows 64 bits", name);
    if (bits % 8 != 0) fail(file, "tensor size is not a whole number of bytes", name);
    if (bits / 8 != t.end - t.begin)
      fail(file,
           "shape and dtype give " + std::to_string(bits / 8) + " bytes but data_offsets span " +
               std::to_string(t.end - t.begin),
           name);
    h.tensors.push_back(std::move(t));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != expected)
      fail(file,
           std::string(t.begin < expected ? "overlaps the previous tensor" : "leaves a gap after the previous tensor") +
               " (starts at " + std::to_string(t.begin) + ", expected " + std::to_string(expected) + ")",
           t.name);
    expected = t.end;
  }
  const uint64_t data_len = file_size - 8 - n;
  if (expected != data_len)
    fail(file, "tensors cover " + std::to_string(expected) + " data bytes but the file holds " +
                   std::to_string(data_len) +
                   (expected > data_len ? ": truncated download?" : ": trailing bytes after the last tensor"));
  return h;
}

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string file = path.string();
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(ErrorKind::Io, std::string("cannot open: ") + std::strerror(errno), file);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(ErrorKind::Io, std::string("cannot stat: ") + std::strerror(e), file);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(ErrorKind::Io, "not a regular file", file);
  }
  SafetensorsFile f;
  f.path_ = path;
  f.size_ = uint64_t(st.st_size);
  if (f.size_ > 0) {
    void* m = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw Error(ErrorKind::Io, std::string("cannot map: ") + std::strerror(e), file);
    }
    f.map_ = static_cast<const std::byte*>(m);
  }
  ::close(fd);
  std::span<const std::byte> all(f.map_, f.size_);
  f.header_ = parse_header(all, f.size_, file);
  return f;
}

SafetensorsFile::SafetensorsFile(SafetensorsFile&& o) noexcept
    : path_(std::move(o.path_)), header_(std::move(o.header_)), map_(o.map_), size_(o.size_) {
  o.map_ = nullptr;
  o.size_ = 0;
}

SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&& o) noexcept {
  if (this != &o) {
    if (map_) ::munmap(const_cast<std::byte*>(map_), size_);
    path_ = std::move(o.path_);
    header_ = std::move(o.header_);
    map_ = o.map_;
    size_ = o.size_;
    o.map_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<std::byte*>(map_), size_);
}

std::span<const std::byte> SafetensorsFile::data(const TensorInfo& t) const {
  const uint64_t off = header_.data_offset() + t.begin;
  if (t.end < t.begin || off + (t.end - t.begin) > size_)
    throw Error(ErrorKind::Format, "tensor data out of bounds", path_.string(), t.name);
  return {map_ + off, size_t(t.end - t.begin)};
}

std::span<const std::byte> SafetensorsFile::data(std::string_view name) const {
  const TensorInfo* t = header_.find(name);
  if (!t) throw Error(ErrorKind::Format, "no such tensor", path_.string(), std::string(name));
  return data(*t);
}

void SafetensorsFile::release(const TensorInfo& t) const { release_range(t, 0, t.nbytes()); }

void SafetensorsFile::release_range(const TensorInfo& t, uint64_t offset, uint64_t bytes) const {
  if (!map_ || t.end < t.begin) return;
  const uint64_t size = t.end - t.begin;
  if (offset >= size) return;
  bytes = std::min(bytes, size - offset);
  static const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  uint64_t lo = header_.data_offset() + t.begin + offset;
  uint64_t hi = std::min(lo + bytes, size_);
  lo = (lo + page - 1) / page * page;  // only whole pages inside the range
  hi = hi / page * page;
  if (hi > lo) ::madvise(const_cast<std::byte*>(map_) + lo, hi - lo, MADV_DONTNEED);
}

}  // namespace deltaedit::io
