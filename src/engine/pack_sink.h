// The pack encoder sink of the executor: each tensor's output bytes are gathered, encoded by the
// caller's encoder (the smallest exact encoding of Δ', or raw bytes), and the components spilled
// to an unlinked scratch file as they come; pack.safetensors is assembled from it once every size
// is known, so memory stays at the tensors in flight.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/executor.h"
#include "pack/pack.h"

namespace deltaedit::engine {

class PackSink final : public TensorSink {
 public:
  // encode(i, out) turns tensor i's output bytes into its pack encoding.
  using Encoder = std::function<pack::Encoded(size_t i, std::span<const std::byte> out)>;
  PackSink(const std::vector<ExecTensor>& tensors, Encoder encode);
  ~PackSink() override;

  void open(io::Staging& staging) override;
  void write(size_t i, std::span<const std::byte> bytes, uint64_t offset) override;
  void done(size_t i) override;
  void finish(io::Staging& staging) override;
  void validate(const std::filesystem::path& dir) override;

  // Per tensor, once done: {name, encoding, params, parts, dtype, shape}, and stored bytes.
  const nlohmann::json& tensor_meta(size_t i) const { return meta_[i]; }
  uint64_t stored_bytes(size_t i) const { return stored_[i]; }

 private:
  struct Entry {
    std::string name;
    io::DType dtype;
    std::vector<int64_t> shape;
    uint64_t offset, bytes;
  };
  const std::vector<ExecTensor>& ts_;
  Encoder encode_;
  std::vector<std::vector<std::byte>> full_;  // output bytes of the tensors in flight
  std::vector<nlohmann::json> meta_;
  std::vector<uint64_t> stored_;
  std::vector<std::vector<Entry>> entries_;  // per tensor, in part order
  std::mutex mu_;
  int fd_ = -1;
  std::string label_;
  uint64_t size_ = 0;
};

}  // namespace deltaedit::engine
