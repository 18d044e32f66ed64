#include "io/writer.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "util/checked.h"
#include "util/error.h"
#include "util/interrupt.h"

namespace fs = std::filesystem;

namespace deltaedit::io {
namespace {

// Rank of a dtype in the reference writer's ordering (its enum order), used as a tie-breaker
// between dtypes of equal width (BF16 before F16, U64 before I64 before F64, ...).
int reference_rank(DType d) {
  static constexpr DType order[] = {DType::BOOL,    DType::F4,          DType::F6_E2M3,     DType::F6_E3M2,
                                    DType::U8,      DType::I8,          DType::F8_E5M2,     DType::F8_E4M3,
                                    DType::F8_E8M0, DType::F8_E4M3FNUZ, DType::F8_E5M2FNUZ, DType::I16,
                                    DType::U16,     DType::F16,         DType::BF16,        DType::I32,
                                    DType::U32,     DType::F32,         DType::C64,         DType::F64,
                                    DType::I64,     DType::U64};
  for (int i = 0; i < int(std::size(order)); ++i)
    if (order[i] == d) return i;
  return 0;
}

[[noreturn]] void io_fail(const std::string& what, const std::string& p, int err) {
  std::string msg = what + ": " + std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) msg += " (disk full: free space or choose another --out)";
  if (err == EFBIG) msg += " (file size limit reached)";
  throw Error(ErrorKind::Io, msg, p);
}
[[noreturn]] void io_fail(const std::string& what, const fs::path& p, int err) { io_fail(what, p.string(), err); }

}  // namespace

void pwrite_all(int fd, const std::byte* p, uint64_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    check_interrupted();
    size_t chunk = size_t(std::min<uint64_t>(n, uint64_t(1) << 30));
    ssize_t w = ::pwrite(fd, p, chunk, off_t(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      io_fail("write failed", path, errno);
    }
    if (w == 0) io_fail("write made no progress", path, ENOSPC);
    p += w;
    n -= uint64_t(w);
    off += uint64_t(w);
  }
}

namespace {


extern "C" void on_signal(int sig) {
  if (util::g_interrupt_signal.load() != 0) {  // second signal: give up at once, default action
    ::signal(sig, SIG_DFL);
    ::raise(sig);
  }
  util::g_interrupt_signal.store(sig);
}

}  // namespace

uint64_t PlannedTensor::nbytes() const { return util::checked_nbytes(shape, dtype_bits(dtype), {}, name); }

uint64_t Layout::file_size() const {
  return 8 + header_json.size() + (tensors.empty() ? 0 : tensors.back().end);
}

Layout plan_layout(std::vector<PlannedTensor> tensors, const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(), [](const PlannedTensor& a, const PlannedTensor& b) {
    if (dtype_bits(a.dtype) != dtype_bits(b.dtype)) return dtype_bits(a.dtype) > dtype_bits(b.dtype);
    if (a.dtype != b.dtype) return reference_rank(a.dtype) > reference_rank(b.dtype);
    return a.name < b.name;
  });
  Layout L;
  std::string h = "{";
  std::map<std::string, std::string> md = metadata;
  md["format"] = "pt";
  h += "\"__metadata__\":{";
  bool first = true;
  for (const auto& [k, v] : md) {
    if (!first) h += ",";
    first = false;
    h += nlohmann::json(k).dump() + ":" + nlohmann::json(v).dump();
  }
  h += "}";
  uint64_t off = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    if (i > 0 && t.name == tensors[i - 1].name)
      throw Error(ErrorKind::Internal, "tensor planned twice", "", t.name);
    if (t.name == "__metadata__") throw Error(ErrorKind::Internal, "reserved tensor name", "", t.name);
    // Shapes reach the writer validated (from a parsed file or a checked plan); an overflow
    // here is still refused rather than wrapped.
    const uint64_t bits = util::checked_mul(util::checked_numel(t.shape, {}, t.name), dtype_bits(t.dtype),
                                            "tensor size", {}, t.name);
    if (bits % 8 != 0) throw Error(ErrorKind::Internal, "tensor size is not a whole number of bytes", "", t.name);
    TensorInfo ti{t.name, t.dtype, t.shape, off, util::checked_add(off, bits / 8, "file size", {}, t.name)};
    off = ti.end;
    h += "," + nlohmann::json(t.name).dump() + ":{\"dtype\":\"" + std::string(dtype_name(t.dtype)) +
         "\",\"shape\":[";
    for (size_t j = 0; j < t.shape.size(); ++j) h += (j ? "," : "") + std::to_string(t.shape[j]);
    h += "],\"data_offsets\":[" + std::to_string(ti.begin) + "," + std::to_string(ti.end) + "]}";
    L.tensors.push_back(std::move(ti));
  }
  h += "}";
  while (h.size() % 8 != 0) h += ' ';
  L.header_json = std::move(h);
  return L;
}

SafetensorsWriter::SafetensorsWriter(int fd, std::string label, std::vector<PlannedTensor> tensors,
                                     std::map<std::string, std::string> metadata)
    : label_(std::move(label)), layout_(plan_layout(std::move(tensors), metadata)),
      written_(layout_.tensors.size()), fd_(fd) {
  for (size_t i = 0; i < layout_.tensors.size(); ++i) pos_[layout_.tensors[i].name] = i;
  const uint64_t size = layout_.file_size();
  if (size > 0) {
    int r = ::posix_fallocate(fd_, 0, off_t(size));
    if (r == ENOSPC || r == EDQUOT || r == EFBIG)
      io_fail("cannot reserve " + std::to_string(size) + " bytes", label_, r);
  }
  std::byte len[8];
  uint64_t n = layout_.header_json.size();
  for (int i = 0; i < 8; ++i) len[i] = std::byte((n >> (8 * i)) & 0xFF);
  pwrite_all(fd_, len, 8, 0, label_);
  pwrite_all(fd_, reinterpret_cast<const std::byte*>(layout_.header_json.data()), n, 8, label_);
}

const TensorInfo& SafetensorsWriter::find(std::string_view name) const {
  auto it = pos_.find(name);
  if (it == pos_.end()) throw Error(ErrorKind::Internal, "tensor was not planned", label_, std::string(name));
  return layout_.tensors[it->second];
}

void SafetensorsWriter::write(std::string_view name, std::span<const std::byte> bytes, uint64_t offset_in_tensor) {
  const TensorInfo& t = find(name);
  if (offset_in_tensor + bytes.size() > t.nbytes())
    throw Error(ErrorKind::Internal,
                fmt::format("write of {} bytes at {} exceeds the planned {} bytes", bytes.size(), offset_in_tensor,
                            t.nbytes()),
                label_, t.name);
  const uint64_t at = 8 + layout_.header_json.size() + t.begin + offset_in_tensor;
  pwrite_all(fd_, bytes.data(), bytes.size(), at, label_);
#ifdef SYNC_FILE_RANGE_WRITE
  // Start the write-back of these pages now (asynchronous), so the disk works while the next
  // pieces are computed and finish()'s fsync has little left to wait for. Advice only.
  if (bytes.size() >= (size_t{1} << 20)) ::sync_file_range(fd_, off_t(at), off_t(bytes.size()), SYNC_FILE_RANGE_WRITE);
#endif
  written_[pos_.find(name)->second] += bytes.size();
}

void SafetensorsWriter::finish() {
  for (size_t i = 0; i < layout_.tensors.size(); ++i)
    if (written_[i].load() != layout_.tensors[i].nbytes())
      throw Error(ErrorKind::Internal,
                  fmt::format("{} of {} bytes written", written_[i].load(), layout_.tensors[i].nbytes()), label_,
                  layout_.tensors[i].name);
  if (::fsync(fd_) != 0) io_fail("fsync failed", label_, errno);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: blocking calls return EINTR and loops re-check the flag
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGXFSZ, SIG_IGN);  // exceeding RLIMIT_FSIZE must surface as EFBIG, not kill us
}

bool interrupted() { return util::g_interrupt_signal.load() != 0; }

void check_interrupted() { util::check_interrupted(); }

void fsync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) io_fail("cannot open for fsync", path, errno);
  if (::fsync(fd) != 0 && errno != EINVAL) {
    int e = errno;
    ::close(fd);
    io_fail("fsync failed", path, e);
  }
  ::close(fd);
}

namespace {
bool pid_alive(long pid) { return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno == EPERM); }

// Remove `.NAME.deltaedit-staging-PID-N` directories left by processes that no longer exist.
void remove_stale_staging(const fs::path& parent, const std::string& name) {
  const std::string prefix = "." + name + ".deltaedit-staging-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind(prefix, 0) != 0) continue;
    long pid = std::strtol(n.c_str() + prefix.size(), nullptr, 10);
    if (!pid_alive(pid)) fs::remove_all(e.path(), ec);
  }
}
}  // namespace

Staging::Staging(const fs::path& target, const std::vector<fs::path>& inputs, uint64_t planned_bytes) {
  target_ = fs::absolute(target).lexically_normal();
  if (target_.filename().empty()) target_ = target_.parent_path();
  std::error_code ec;
  struct stat tst {};
  if (::lstat(target_.c_str(), &tst) == 0) {
    for (const auto& in : inputs) {
      struct stat ist {};
      if (::stat(in.c_str(), &ist) == 0 && ist.st_dev == tst.st_dev && ist.st_ino == tst.st_ino)
        throw Error(ErrorKind::Usage, "output is an input of this run (" + in.string() + "); refusing to overwrite it",
                    target_.string());
      auto rel = fs::weakly_canonical(in, ec).lexically_relative(fs::weakly_canonical(target_, ec));
      if (!ec && !rel.empty() && *rel.begin() != "..")
        throw Error(ErrorKind::Usage, "output contains an input of this run (" + in.string() + ")", target_.string());
    }
    throw Error(ErrorKind::Usage, "output already exists; choose a new path or remove it first", target_.string());
  }
  parent_ = target_.parent_path();
  fs::create_directories(parent_, ec);
  if (ec) throw Error(ErrorKind::Io, "cannot create the output's parent directory: " + ec.message(), parent_.string());
  struct statvfs vfs {};
  if (::statvfs(parent_.c_str(), &vfs) == 0) {
    const uint64_t avail = uint64_t(vfs.f_bavail) * uint64_t(vfs.f_frsize);
    if (avail < planned_bytes + (1u << 20))
      throw Error(ErrorKind::Io,
                  fmt::format("not enough free space: {} bytes needed, {} available", planned_bytes, avail),
                  parent_.string());
  }
  remove_stale_staging(parent_, target_.filename().string());
  for (int attempt = 0;; ++attempt) {
    dir_ = parent_ / fmt::format(".{}.deltaedit-staging-{}-{}", target_.filename().string(), ::getpid(), attempt);
    if (!fs::exists(dir_, ec)) break;
    if (attempt > 1000) throw Error(ErrorKind::Io, "cannot find a free staging name", parent_.string());
  }
}

Staging::~Staging() {
  for (auto& f : files_)
    if (f.fd >= 0) ::close(f.fd);
  if (!done_ && dir_made_) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

void Staging::ensure_dir() {
  if (dir_made_) return;
  if (::mkdir(dir_.c_str(), 0755) != 0) io_fail("cannot create staging directory", dir_, errno);
  dir_made_ = true;
}

int Staging::create(const std::string& name) {
  check_interrupted();
  for (const auto& f : files_)
    if (f.name == name) throw Error(ErrorKind::Internal, "file created twice", target_.string(), name);
  if (tmpfile_ok_) {
    int fd = ::open(parent_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
    if (fd >= 0) {
      files_.push_back({name, fd, true});
      return fd;
    }
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL && errno != ENOENT)
      io_fail("cannot create a file beside the output", parent_, errno);
    tmpfile_ok_ = false;  // this filesystem has no anonymous files: use named staging files
  }
  ensure_dir();
  const fs::path p = dir_ / name;
  int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) io_fail("cannot create", p, errno);
  files_.push_back({name, fd, false});
  return fd;
}

void Staging::copy_in(const fs::path& src, const std::string& name) {
  std::ifstream in(src, std::ios::binary);
  if (!in) throw Error(ErrorKind::Io, "cannot read", src.string());
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Error(ErrorKind::Io, "read failed", src.string());
  write_text(name, bytes);
}

void Staging::write_text(const std::string& name, const std::string& text) {
  int fd = create(name);
  pwrite_all(fd, reinterpret_cast<const std::byte*>(text.data()), text.size(), 0, (target_ / name).string());
}

fs::path Staging::materialize() {
  check_interrupted();
  // Every file's data is made durable while the files are still anonymous, before the staging
  // directory exists: the fsyncs are the slow part, and a process killed (SIGKILL, which no
  // handler sees) during them leaves nothing on disk. The window in which a kill leaves a named
  // staging directory is only the mkdir, the links and the directory's fsync below; a later run
  // for the same target removes such a directory (remove_stale_staging).
  for (auto& f : files_)
    if (f.fd >= 0 && ::fsync(f.fd) != 0) io_fail("fsync failed", dir_ / f.name, errno);
  check_interrupted();
  ensure_dir();
  for (auto& f : files_) {
    if (f.fd < 0) continue;  // already named and closed by an earlier call
    if (f.anonymous) {
      const std::string proc = "/proc/self/fd/" + std::to_string(f.fd);
      const fs::path dst = dir_ / f.name;
      if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, dst.c_str(), AT_SYMLINK_FOLLOW) != 0)
        io_fail("cannot name the written file", dst, errno);
      f.anonymous = false;
    }
    int fd = f.fd;
    f.fd = -1;
    if (::close(fd) != 0) io_fail("close failed", dir_ / f.name, errno);
  }
  fsync_path(dir_, true);
  return dir_;
}

void Staging::commit_dir() {
  materialize();
  check_interrupted();
  if (::renameat2(AT_FDCWD, dir_.c_str(), AT_FDCWD, target_.c_str(), RENAME_NOREPLACE) != 0) {
    if (errno == EINVAL || errno == ENOSYS) {
      if (fs::exists(target_)) io_fail("output appeared while writing", target_, EEXIST);
      if (::rename(dir_.c_str(), target_.c_str()) != 0) io_fail("cannot rename staging onto output", target_, errno);
    } else {
      io_fail("cannot rename staging onto output", target_, errno);
    }
  }
  done_ = true;
  fsync_path(parent_, true);
}

void Staging::commit_file(const std::string& name) {
  materialize();
  check_interrupted();
  const fs::path src = dir_ / name;
  // link() never replaces an existing path: the no-overwrite rule holds even in a race.
  if (::link(src.c_str(), target_.c_str()) != 0) io_fail("cannot create the output", target_, errno);
  fsync_path(parent_, true);
  std::error_code ec;
  fs::remove_all(dir_, ec);
  done_ = true;
}

void replace_file(const fs::path& path, std::string_view bytes) {
  check_interrupted();
  const fs::path target = fs::absolute(path).lexically_normal();
  const fs::path parent = target.parent_path();
  const std::string name = target.filename().string();
  if (name.empty()) throw Error(ErrorKind::Internal, "replace_file needs a file name", path.string());
  remove_stale_staging(parent, name);
  fs::path tmp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    tmp = parent / fmt::format(".{}.deltaedit-staging-{}-{}", name, ::getpid(), attempt);
    fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && (errno != EEXIST || attempt > 1000)) io_fail("cannot write the file", path, errno);
  }
  try {
    pwrite_all(fd, reinterpret_cast<const std::byte*>(bytes.data()), bytes.size(), 0, path.string());
    if (::fsync(fd) != 0) io_fail("fsync failed", path, errno);
    const int cfd = fd;
    fd = -1;
    if (::close(cfd) != 0) io_fail("close failed", path, errno);
    check_interrupted();
    if (::rename(tmp.c_str(), target.c_str()) != 0) io_fail("cannot rename the written file into place", path, errno);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_path(parent, true);
}

}  // namespace deltaedit::io
