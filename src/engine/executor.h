// The N-input per-tensor executor, shared by `edit`, `apply` and `merge`: for every output tensor
// it reads that tensor's N input tensors from their sources, decodes them to f32 holding values
// of the work dtype W (cropping 2-D inputs to the output shape), runs a kernel, encodes the result
// into the output dtype and feeds a sink (the checkpoint writer, or the pack encoder), all through
// the staging protocol of RELIABILITY.md. Workers take tensors in turn; buffers are admitted
// against a memory budget, so peak memory ≈ workers × (N + 2) × the largest tensor in f32 and never
// grows with the number of tensors. Streamed tensors pass in fixed blocks without whole-tensor
// buffers. Output bytes do not depend on the thread count.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/tensor_source.h"
#include "io/writer.h"

namespace deltaedit::engine {

struct ExecSource {
  const io::TensorSource* checkpoint = nullptr;
  std::string tensor;
  // Without a checkpoint (copies only): these bytes, already in the output dtype.
  std::span<const std::byte> bytes;
};

enum class ExecMode {
  Auto,    // streamed when `pointwise` and no input is cropped and it is larger than a block
  Stream,  // always streamed, block by block in element order
  Copy,    // inputs[0] copied byte for byte, or converted to the output dtype; no kernel
};

struct ExecTensor {
  std::string name;
  std::vector<int64_t> shape;  // output shape; 2-D inputs larger than it are cropped
  io::DType out_dtype = io::DType::F32;
  io::DType work = io::DType::F32;  // F32, BF16 or F16: inputs are rounded to it
  std::vector<ExecSource> inputs;   // in the order the kernel expects
  bool pointwise = false;           // the kernel may be called on blocks (ExecMode::Auto)
  ExecMode mode = ExecMode::Auto;
  bool prepare = false;  // ExecOptions::prepare(i) runs before the tensor's blocks
  // Streamed tensors only: read passes over the inputs before the output pass (ExecOptions::
  // next_pass and observe), and the quantum its blocks are a multiple of (except the last).
  bool passes = false;
  uint64_t quantum = 1;
  uint64_t hold = 0;  // bytes the kernel or sink holds for it besides the executor's buffers
  uint64_t numel() const;
  uint64_t nbytes() const;
};

// Fills `out` for tensor `index`. `inputs[k]` holds input k's elements [first, first + out.size())
// (the whole tensor unless the tensor streams). Appends warnings naming the tensor. Returns the
// count of non-finite values it made (the encoder adds the values its dtype's range overflows).
using TensorKernel = std::function<uint64_t(
    size_t index, std::span<const std::span<const float>> inputs, std::span<float> out,
    uint64_t first, std::vector<std::string>& warnings)>;

// Counts NaN and ±Inf (for kernels that report every non-finite value they write).
uint64_t count_nonfinite(std::span<const float> v);

// Shard assignment: which file each tensor goes to, and whether an index is written.
struct ShardPlan {
  std::vector<std::string> files;
  std::vector<size_t> shard_of;
  bool index = false;
};
// Greedy in the given order: a new shard starts when the current one is non-empty and would
// exceed the limit (0 = one file); an index when there is more than one file.
ShardPlan plan_shards(const std::vector<ExecTensor>& tensors, uint64_t max_shard_size);

// Where encoded output bytes go. write() may be called from any worker, for distinct tensors at
// once; done(i) follows the last write of tensor i on the same worker.
class TensorSink {
 public:
  virtual ~TensorSink() = default;
  virtual void open(io::Staging& staging) = 0;
  virtual void write(size_t i, std::span<const std::byte> bytes, uint64_t offset) = 0;
  virtual void done(size_t i) {}
  // After every tensor: complete the files (before the text files are written).
  virtual void finish(io::Staging& staging) = 0;
  // Re-open what was written in the materialized directory and check it before the rename.
  virtual void validate(const std::filesystem::path& dir) = 0;
};

// A Hugging Face checkpoint: safetensors shards, and the index when the plan asks for one.
std::unique_ptr<TensorSink> checkpoint_sink(const std::vector<ExecTensor>& tensors,
                                            ShardPlan shards,
                                            std::map<std::string, std::string> metadata);

struct ExecReport {
  std::vector<std::string> files;                  // weight files written (checkpoint sink)
  std::vector<std::vector<std::string>> warnings;  // per tensor, from the kernel
  std::vector<uint64_t> nonfinite;                 // NaN/Inf written per tensor (kernel + encoder)
  std::vector<bool> streamed;                      // per tensor
  uint64_t output_bytes = 0;
  uint64_t peak_buffer_bytes = 0;  // most tensor-buffer bytes held at once
};

struct ExecOptions {
  std::filesystem::path out;
  unsigned threads = 2;
  uint64_t max_memory = 768'000'000;
  uint64_t max_shard_size = 5'000'000'000;      // 0 = one file (unless `shards` is given)
  std::optional<ShardPlan> shards;              // a given layout instead of the greedy one
  std::map<std::string, std::string> metadata;  // safetensors __metadata__ (besides format)
  std::vector<std::filesystem::path> inputs;    // never written over (with the sources')
  std::optional<uint64_t> reserve_bytes;        // free space required (default: output bytes)
  std::vector<std::pair<std::filesystem::path, std::string>> copies;  // files copied byte for byte
  // Text files written after the weights (config.json, provenance, model card), given the report.
  std::function<std::vector<std::pair<std::string, std::string>>(const ExecReport&)> texts;
  std::function<void(size_t done, size_t total, uint64_t bytes)> progress;
  // Per-tensor hooks, on the tensor's worker, inside its memory hold: before its first block
  // (tensors with `prepare`), and after the sink's done(i).
  std::function<void(size_t index)> prepare, after;
  // Streamed tensors with `passes`, after prepare: while next_pass(i), one more read pass hands
  // every block of the inputs, in index order, to observe(i, inputs, first); then the output pass.
  std::function<bool(size_t index)> next_pass;
  std::function<void(size_t index, std::span<const std::span<const float>> inputs, uint64_t first)>
      observe;
  size_t block = size_t(1) << 16;  // elements per streamed block (rounded up to a multiple of a
                                   // tensor's quantum; bytes never depend on it)
};

// Runs every tensor into `sink` (the checkpoint sink of opt.shards, or of the greedy plan, when
// null) and commits the output directory.
ExecReport execute(const std::vector<ExecTensor>& tensors, const TensorKernel& kernel,
                   const ExecOptions& opt, TensorSink* sink = nullptr);

}  // namespace deltaedit::engine
