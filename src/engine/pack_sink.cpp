#include "engine/pack_sink.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "io/safetensors.h"
#include "io/writer.h"
#include "util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::engine {

PackSink::PackSink(const std::vector<ExecTensor>& tensors, Encoder encode)
    : ts_(tensors),
      encode_(std::move(encode)),
      full_(tensors.size()),
      meta_(tensors.size()),
      stored_(tensors.size(), 0),
      entries_(tensors.size()) {}

PackSink::~PackSink() {
  if (fd_ >= 0) ::close(fd_);
}

// An unlinked scratch file beside the output: it vanishes with the process, whatever happens.
void PackSink::open(io::Staging& staging) {
  const fs::path target = staging.target();
  const fs::path p = target.parent_path() / fmt::format(".{}.deltaedit-scratch-{}",
                                                        target.filename().string(), ::getpid());
  label_ = p.string();
  fd_ = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd_ < 0)
    throw Error(ErrorKind::Io, std::string("cannot create scratch file: ") + std::strerror(errno),
                label_);
  ::unlink(p.c_str());
}

void PackSink::write(size_t i, std::span<const std::byte> bytes, uint64_t offset) {
  auto& f = full_[i];
  if (f.empty()) f.resize(ts_[i].nbytes());
  std::memcpy(f.data() + offset, bytes.data(), bytes.size());
}

void PackSink::done(size_t i) {
  auto& f = full_[i];
  if (f.size() != ts_[i].nbytes()) f.resize(ts_[i].nbytes());
  pack::Encoded e = encode_(i, f);
  std::vector<std::byte>().swap(f);
  const ExecTensor& t = ts_[i];
  stored_[i] = e.stored_bytes();
  std::lock_guard<std::mutex> g(mu_);
  json parts = json::array();
  for (auto& p : e.parts) {
    io::pwrite_all(fd_, p.bytes.data(), p.bytes.size(), size_, label_);
    entries_[i].push_back({t.name + "::" + p.suffix, p.dtype, p.shape, size_, p.bytes.size()});
    size_ += p.bytes.size();
    parts.push_back(p.suffix);
  }
  meta_[i] = {{"name", t.name},
              {"encoding", e.encoding},
              {"params", e.params},
              {"parts", parts},
              {"dtype", io::dtype_name(t.out_dtype)},
              {"shape", t.shape}};
}

void PackSink::finish(io::Staging& staging) {
  // Components in tensor order, whatever order the workers finished in: the pack's bytes do not
  // depend on the thread count.
  std::vector<const Entry*> all;
  for (const auto& v : entries_)
    for (const auto& e : v) all.push_back(&e);
  std::vector<io::PlannedTensor> planned;
  for (const auto* e : all) planned.push_back({e->name, e->dtype, e->shape});
  io::SafetensorsWriter w(staging.create(pack::kPackFile),
                          (staging.target() / pack::kPackFile).string(), planned,
                          {{"deltaedit.pack", pack::kPackFormat}});
  std::vector<std::byte> buf;
  for (const auto* e : all) {
    buf.resize(e->bytes);
    uint64_t got = 0;
    while (got < e->bytes) {
      ssize_t r = ::pread(fd_, buf.data() + got, e->bytes - got, off_t(e->offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) throw Error(ErrorKind::Io, "read back of scratch file failed", label_);
      got += uint64_t(r);
    }
    w.write(e->name, buf);
  }
  w.finish();
}

void PackSink::validate(const fs::path& dir) { io::SafetensorsFile::open(dir / pack::kPackFile); }

}  // namespace deltaedit::engine
