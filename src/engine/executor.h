// The N-input per-tensor executor: for every output tensor it reads that tensor's N input tensors
// from mapped checkpoints, decodes them to f32 holding values of the work dtype W (cropping 2-D
// inputs to the output shape), runs a kernel, encodes the result into the output dtype and writes
// it through the staging protocol of RELIABILITY.md. Workers take tensors in turn; buffers are
// admitted against a memory budget, so peak memory ≈ workers × (N + 2) × the largest tensor in f32
// and never grows with the number of tensors. Pointwise kernels stream in fixed blocks without
// whole-tensor buffers. Output bytes do not depend on the thread count.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace deltaedit::engine {

struct ExecSource {
  const io::Checkpoint* checkpoint = nullptr;
  std::string tensor;
};

struct ExecTensor {
  std::string name;
  std::vector<int64_t> shape;  // output shape; 2-D inputs larger than it are cropped
  io::DType out_dtype = io::DType::F32;
  io::DType work = io::DType::F32;  // F32, BF16 or F16: inputs are rounded to it
  std::vector<ExecSource> inputs;   // in the order the kernel expects
  bool pointwise = false;           // the kernel may be called on blocks
  uint64_t numel() const;
};

// Fills `out` for tensor `index`. `inputs[k]` holds input k's elements [first, first + out.size())
// (the whole tensor unless the tensor streams). Appends warnings naming the tensor.
using TensorKernel =
    std::function<void(size_t index, std::span<const std::span<const float>> inputs,
                       std::span<float> out, uint64_t first, std::vector<std::string>& warnings)>;

struct ExecReport {
  std::vector<std::string> files;                  // weight files written
  std::vector<std::vector<std::string>> warnings;  // per tensor, from the kernel
  std::vector<uint64_t> nonfinite;                 // NaN/Inf written per tensor
  std::vector<bool> streamed;                      // per tensor
  uint64_t output_bytes = 0;
  uint64_t peak_buffer_bytes = 0;  // most tensor-buffer bytes held at once
};

struct ExecOptions {
  std::filesystem::path out;
  unsigned threads = 2;
  uint64_t max_memory = 768'000'000;
  uint64_t max_shard_size = 5'000'000'000;      // 0 = one file
  std::map<std::string, std::string> metadata;  // safetensors __metadata__ (besides format)
  std::vector<std::filesystem::path> inputs;    // never written over (with the checkpoints')
  std::vector<std::pair<std::filesystem::path, std::string>> copies;  // files copied byte for byte
  // Text files written after the weights (config.json, provenance, model card), given the report.
  std::function<std::vector<std::pair<std::string, std::string>>(const ExecReport&)> texts;
  std::function<void(size_t done, size_t total, uint64_t bytes)> progress;
  size_t block = size_t(1) << 16;  // elements per streamed block (fixed: bytes never depend on it)
};

// Shard assignment, greedy in the given order: a new shard starts when the current one is
// non-empty and would exceed the limit. Returns the file of each tensor and the file names.
struct ShardPlan {
  std::vector<std::string> files;
  std::vector<size_t> shard_of;
};
ShardPlan plan_shards(const std::vector<ExecTensor>& tensors, uint64_t max_shard_size);

ExecReport execute(const std::vector<ExecTensor>& tensors, const TensorKernel& kernel,
                   const ExecOptions& opt);

}  // namespace deltaedit::engine
