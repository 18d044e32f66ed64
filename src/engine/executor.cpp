#include "engine/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>

#include "io/checkpoint.h"
#include "io/convert.h"
#include "util/big_buffer.h"
#include "util/error.h"
#include "util/memory_budget.h"
#include "util/prefetch.h"
#include "util/thread_pool.h"

namespace fs = std::filesystem;

namespace deltaedit::engine {
namespace {

constexpr uint64_t kOutChunk = uint64_t(1) << 20;    // elements encoded and written at once
constexpr uint64_t kCopyBytes = uint64_t(64) << 20;  // bytes copied at once
constexpr size_t kConvertBlock = 4096;               // elements converted at once (in cache)

// Round f32 values (already decoded) to the work dtype W, in place.
void round_to(io::DType work, io::DType stored, std::span<float> v) {
  if (work == io::DType::F32 || work == stored) return;
  if (work == io::DType::BF16)
    for (auto& x : v) x = io::bf16_to_f32(io::f32_to_bf16(x));
  else if (work == io::DType::F16)
    for (auto& x : v) x = io::f16_to_f32(io::f32_to_f16(x));
}

// Decodes elements [first, first + out.size()) of an input laid out as `in_shape`, seen through
// the (cropped) output shape, into W.
void decode(const ExecSource& s, const ExecTensor& t, uint64_t first, std::span<float> out) {
  const auto& info = s.checkpoint->info(s.tensor);
  const auto bytes = s.checkpoint->data(s.tensor);
  const size_t esz = io::dtype_bits(info.dtype) / 8;
  if (info.shape == t.shape) {
    io::to_f32(bytes.subspan(first * esz, out.size() * esz), info.dtype, out);
  } else {
    // 2-D crop: output row r, column j reads input (r, j).
    const uint64_t cols_out = uint64_t(t.shape[1]), cols_in = uint64_t(info.shape[1]);
    uint64_t done = 0;
    while (done < out.size()) {
      const uint64_t e = first + done, r = e / cols_out, j = e % cols_out;
      const uint64_t run = std::min<uint64_t>(cols_out - j, out.size() - done);
      io::to_f32(bytes.subspan((r * cols_in + j) * esz, run * esz), info.dtype,
                 out.subspan(done, run));
      done += run;
    }
  }
  round_to(t.work, info.dtype, out);
}

// Elements [first, first + count) of a streamed (uncropped) input into the cache while the kernel
// computes on the block before them.
void prefetch_input(const ExecSource& s, uint64_t first, uint64_t count) {
  const auto bytes = s.checkpoint->data(s.tensor);
  const uint64_t esz = io::dtype_bits(s.checkpoint->info(s.tensor).dtype) / 8;
  const uint64_t begin = std::min<uint64_t>(bytes.size(), first * esz);
  util::prefetch_read(bytes.subspan(begin, std::min<uint64_t>(bytes.size() - begin, count * esz)));
}

// Encodes `values` into the output dtype and hands them to the sink at element offset `first`;
// returns the values the dtype's range overflowed.
uint64_t emit(TensorSink& sink, size_t i, const ExecTensor& t, std::span<const float> values,
              uint64_t first, std::vector<std::byte>& scratch) {
  const size_t osz = io::dtype_bits(t.out_dtype) / 8;
  uint64_t overflow = 0;
  for (uint64_t off = 0; off < values.size(); off += kOutChunk) {
    const size_t m = size_t(std::min<uint64_t>(kOutChunk, values.size() - off));
    scratch.resize(m * osz);
    overflow += io::from_f32(values.subspan(off, m), t.out_dtype, scratch).overflow;
    sink.write(i, scratch, (first + off) * osz);
  }
  return overflow;
}

// ExecMode::Copy: inputs[0] byte for byte, or converted chunk by chunk.
void copy_tensor(TensorSink& sink, size_t i, const ExecTensor& t) {
  const ExecSource& s = t.inputs.at(0);
  const auto src = s.checkpoint ? s.checkpoint->data(s.tensor) : s.bytes;
  const io::DType src_dt = s.checkpoint ? s.checkpoint->info(s.tensor).dtype : t.out_dtype;
  const auto release = [&](uint64_t off, uint64_t len) {
    if (s.checkpoint) s.checkpoint->release_range(s.tensor, off, len);
  };
  if (src_dt == t.out_dtype) {
    for (uint64_t off = 0; off < src.size(); off += kCopyBytes) {
      io::check_interrupted();
      const uint64_t len = std::min<uint64_t>(kCopyBytes, src.size() - off);
      sink.write(i, src.subspan(off, len), off);
      release(off, len);
    }
    return;
  }
  const uint64_t numel = t.numel();
  const size_t isz = io::dtype_bits(src_dt) / 8, osz = io::dtype_bits(t.out_dtype) / 8;
  float f[kConvertBlock];
  std::vector<std::byte> o(std::min<uint64_t>(numel, kOutChunk) * osz);
  for (uint64_t off = 0; off < numel; off += kOutChunk) {
    const size_t m = size_t(std::min<uint64_t>(kOutChunk, numel - off));
    for (size_t k = 0; k < m; k += kConvertBlock) {
      const size_t c = std::min(kConvertBlock, m - k);
      io::to_f32(src.subspan((off + k) * isz, c * isz), src_dt, std::span(f, c));
      io::from_f32(std::span<const float>(f, c), t.out_dtype,
                   std::span(o.data() + k * osz, c * osz));
    }
    sink.write(i, std::span<const std::byte>(o.data(), m * osz), off * osz);
    release(off * isz, uint64_t(m) * isz);
  }
}

class CheckpointSink final : public TensorSink {
 public:
  CheckpointSink(const std::vector<ExecTensor>& ts, ShardPlan sp,
                 std::map<std::string, std::string> md)
      : ts_(ts), sp_(std::move(sp)), md_(std::move(md)) {}
  void open(io::Staging& staging) override {
    std::vector<std::vector<io::PlannedTensor>> per(sp_.files.size());
    for (size_t i = 0; i < ts_.size(); ++i)
      per[sp_.shard_of[i]].push_back({ts_[i].name, ts_[i].out_dtype, ts_[i].shape});
    for (size_t s = 0; s < per.size(); ++s)
      w_.push_back(std::make_unique<io::SafetensorsWriter>(
          staging.create(sp_.files[s]), (staging.target() / sp_.files[s]).string(),
          std::move(per[s]), md_));
  }
  void write(size_t i, std::span<const std::byte> bytes, uint64_t offset) override {
    w_[sp_.shard_of[i]]->write(ts_[i].name, bytes, offset);
  }
  void finish(io::Staging& staging) override {
    for (auto& x : w_) x->finish();
    if (!sp_.index) return;
    nlohmann::json j;
    nlohmann::json wm = nlohmann::json::object();
    uint64_t total = 0;
    for (size_t i = 0; i < ts_.size(); ++i) {
      total += ts_[i].nbytes();
      wm[ts_[i].name] = sp_.files[sp_.shard_of[i]];
    }
    j["metadata"] = {{"total_size", total}};
    j["weight_map"] = wm;
    staging.write_text(io::kIndexName, j.dump(2) + "\n");
  }
  void validate(const fs::path& dir) override {
    auto ck = io::Checkpoint::open(dir);
    if (ck.names().size() != ts_.size())
      throw Error(ErrorKind::Internal, "written checkpoint has the wrong number of tensors",
                  dir.string());
    for (const auto& t : ts_) {
      const auto& info = ck.info(t.name);
      if (info.dtype != t.out_dtype || info.shape != t.shape)
        throw Error(ErrorKind::Internal, "written tensor does not match the plan", dir.string(),
                    t.name);
    }
  }

 private:
  const std::vector<ExecTensor>& ts_;
  ShardPlan sp_;
  std::map<std::string, std::string> md_;
  std::vector<std::unique_ptr<io::SafetensorsWriter>> w_;
};

}  // namespace

uint64_t ExecTensor::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return n;
}

uint64_t ExecTensor::nbytes() const { return io::PlannedTensor{name, out_dtype, shape}.nbytes(); }

uint64_t count_nonfinite(std::span<const float> v) {
  uint64_t n = 0;
  for (float x : v) n += !std::isfinite(x);
  return n;
}

ShardPlan plan_shards(const std::vector<ExecTensor>& tensors, uint64_t max_shard_size) {
  ShardPlan p;
  std::vector<uint64_t> sizes;
  for (const auto& t : tensors) {
    const uint64_t b = t.nbytes();
    if (sizes.empty() ||
        (max_shard_size > 0 && sizes.back() > 0 && sizes.back() + b > max_shard_size))
      sizes.push_back(0);
    p.shard_of.push_back(sizes.size() - 1);
    sizes.back() += b;
  }
  if (sizes.empty()) sizes.push_back(0);
  for (size_t i = 0; i < sizes.size(); ++i)
    p.files.push_back(sizes.size() > 1 ? io::shard_file_name(i + 1, sizes.size())
                                       : io::kSingleName);
  p.index = sizes.size() > 1;
  return p;
}

std::unique_ptr<TensorSink> checkpoint_sink(const std::vector<ExecTensor>& tensors,
                                            ShardPlan shards,
                                            std::map<std::string, std::string> metadata) {
  return std::make_unique<CheckpointSink>(tensors, std::move(shards), std::move(metadata));
}

ExecReport execute(const std::vector<ExecTensor>& tensors, const TensorKernel& kernel,
                   const ExecOptions& opt, TensorSink* sink_in) {
  ExecReport rep;
  ShardPlan shards = opt.shards ? *opt.shards : plan_shards(tensors, opt.max_shard_size);
  std::unique_ptr<TensorSink> own;
  if (!sink_in) {
    rep.files = shards.files;
    own = checkpoint_sink(tensors, shards, opt.metadata);
  }
  TensorSink& sink = sink_in ? *sink_in : *own;
  rep.warnings.resize(tensors.size());
  rep.nonfinite.assign(tensors.size(), 0);
  rep.streamed.assign(tensors.size(), false);
  for (const auto& t : tensors) rep.output_bytes += t.nbytes();

  std::vector<fs::path> inputs = opt.inputs;
  for (const auto& t : tensors)
    for (const auto& s : t.inputs)
      if (s.checkpoint)
        for (auto& p : s.checkpoint->input_paths()) inputs.push_back(p);
  std::sort(inputs.begin(), inputs.end());
  inputs.erase(std::unique(inputs.begin(), inputs.end()), inputs.end());

  io::Staging staging(opt.out, inputs, opt.reserve_bytes.value_or(rep.output_bytes));
  sink.open(staging);
  util::MemoryBudget budget(opt.max_memory);
  std::atomic<size_t> done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::mutex progress_mu;
  const uint64_t blk = std::max<size_t>(1, opt.block);
  const uint64_t chunk1 = (kOutChunk + blk - 1) / blk * blk;  // whole blocks

  util::parallel_for(tensors.size(), std::max(1u, opt.threads), [&](size_t i) {
    const ExecTensor& t = tensors[i];
    const uint64_t n = t.numel();
    const size_t N = t.inputs.size();
    std::vector<std::byte> scratch;
    bool stream = t.mode == ExecMode::Stream;
    if (t.mode == ExecMode::Auto) {
      bool cropped = false;
      for (const auto& s : t.inputs) cropped |= s.checkpoint->info(s.tensor).shape != t.shape;
      stream = t.pointwise && !cropped && n > blk;
    }
    rep.streamed[i] = stream;
    std::vector<std::span<const float>> views(N);
    const size_t osz = io::dtype_bits(t.out_dtype) / 8;
    if (t.mode == ExecMode::Copy) {
      util::MemoryBudget::Hold hold(budget, t.hold);
      if (t.prepare && opt.prepare) opt.prepare(i);
      copy_tensor(sink, i, t);
      sink.done(i);
      if (opt.after) opt.after(i);
    } else if (stream) {
      // Blocks of a multiple of the quantum, chunks of whole blocks.
      const uint64_t q = std::max<uint64_t>(1, t.quantum);
      const uint64_t bq = (blk + q - 1) / q * q;
      const uint64_t chunk = q == 1 ? chunk1 : (kOutChunk + bq - 1) / bq * bq;
      const uint64_t b = std::min(bq, std::max<uint64_t>(n, 1));
      const uint64_t c0 = std::min(chunk, std::max<uint64_t>(n, 1));
      util::MemoryBudget::Hold hold(budget, (N + 1) * b * 4 + c0 * osz + t.hold);
      if (t.prepare && opt.prepare) opt.prepare(i);
      std::vector<std::vector<float>> in(N, std::vector<float>(b));
      const auto release_chunk = [&](uint64_t off, uint64_t m) {
        for (const auto& s : t.inputs) {
          const uint64_t esz = io::dtype_bits(s.checkpoint->info(s.tensor).dtype) / 8;
          s.checkpoint->release_range(s.tensor, off * esz, m * esz);
        }
      };
      // Read passes: every block of the inputs, in index order, to observe.
      while (t.passes && opt.next_pass && opt.next_pass(i)) {
        for (uint64_t off = 0; off < n; off += chunk) {
          io::check_interrupted();
          const uint64_t m = std::min(chunk, n - off);
          for (uint64_t k = 0; k < m; k += b) {
            const size_t c = size_t(std::min(b, m - k));
            for (size_t q2 = 0; q2 < N; ++q2) {
              decode(t.inputs[q2], t, off + k, std::span(in[q2].data(), c));
              views[q2] = std::span<const float>(in[q2].data(), c);
            }
            opt.observe(i, views, off + k);
          }
          release_chunk(off, m);
        }
      }
      std::vector<float> out(b);
      std::vector<std::byte> o(c0 * osz);
      for (uint64_t off = 0; off < n; off += chunk) {
        io::check_interrupted();
        const uint64_t m = std::min(chunk, n - off);
        for (uint64_t k = 0; k < m; k += b) {
          if (k > 0) io::check_interrupted();
          const size_t c = size_t(std::min(b, m - k));
          for (size_t q = 0; q < N; ++q) {
            decode(t.inputs[q], t, off + k, std::span(in[q].data(), c));
            views[q] = std::span<const float>(in[q].data(), c);
          }
          if (off + k + c < n)
            for (size_t q = 0; q < N; ++q) prefetch_input(t.inputs[q], off + k + c, c);
          rep.nonfinite[i] += kernel(i, views, std::span(out.data(), c), off + k, rep.warnings[i]);
          rep.nonfinite[i] += io::from_f32(std::span<const float>(out.data(), c), t.out_dtype,
                                           std::span(o.data() + k * osz, c * osz))
                                  .overflow;
        }
        sink.write(i, std::span<const std::byte>(o.data(), m * osz), off * osz);
        release_chunk(off, m);
      }
      sink.done(i);
      if (opt.after) opt.after(i);
    } else {
      util::MemoryBudget::Hold hold(budget, (N + 2) * n * 4 + t.hold);
      io::check_interrupted();
      if (t.prepare && opt.prepare) opt.prepare(i);
      std::vector<util::BigFloatBuffer> in(N);
      for (size_t k = 0; k < N; ++k) {
        in[k].resize(n);
        decode(t.inputs[k], t, 0, in[k]);
        t.inputs[k].checkpoint->release(t.inputs[k].tensor);  // decoded: drop the mapped pages now
        views[k] = in[k];
      }
      util::BigFloatBuffer out(n);
      rep.nonfinite[i] = kernel(i, views, out, 0, rep.warnings[i]);
      io::check_interrupted();
      rep.nonfinite[i] += emit(sink, i, t, out, 0, scratch);
      sink.done(i);
      if (opt.after) opt.after(i);
    }
    for (const auto& s : t.inputs)
      if (s.checkpoint) s.checkpoint->release(s.tensor);
    bytes_done += t.nbytes();
    const size_t d = ++done;
    if (opt.progress) {
      std::lock_guard<std::mutex> g(progress_mu);
      opt.progress(d, tensors.size(), bytes_done.load());
    }
  });
  rep.peak_buffer_bytes = budget.peak();
  sink.finish(staging);

  for (const auto& [src, name] : opt.copies) staging.copy_in(src, name);
  if (opt.texts)
    for (const auto& [name, text] : opt.texts(rep)) staging.write_text(name, text);
  sink.validate(staging.materialize());
  staging.commit_dir();
  return rep;
}

}  // namespace deltaedit::engine
