#include "engine/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <mutex>

#include "util/memory_budget.h"
#include "util/thread_pool.h"
#include "io/convert.h"
#include "io/writer.h"
#include "util/big_buffer.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace deltaedit::engine {
namespace {

constexpr uint64_t kOutChunk = uint64_t(1) << 20;  // elements encoded and written at once

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

// One writer per shard; tensors arrive in any order from any worker.
struct Writers {
  std::vector<std::unique_ptr<io::SafetensorsWriter>> w;
  const ShardPlan& shards;
  Writers(io::Staging& staging, const std::vector<ExecTensor>& ts, const ShardPlan& sp,
          const std::map<std::string, std::string>& md)
      : shards(sp) {
    std::vector<std::vector<io::PlannedTensor>> per(sp.files.size());
    for (size_t i = 0; i < ts.size(); ++i)
      per[sp.shard_of[i]].push_back({ts[i].name, ts[i].out_dtype, ts[i].shape});
    for (size_t s = 0; s < per.size(); ++s)
      w.push_back(std::make_unique<io::SafetensorsWriter>(staging.create(sp.files[s]),
                                                          (staging.target() / sp.files[s]).string(),
                                                          std::move(per[s]), md));
  }
};

// Encodes `values` into the output dtype and writes them at element offset `first`.
uint64_t emit(io::SafetensorsWriter& w, const ExecTensor& t, std::span<const float> values,
              uint64_t first, std::vector<std::byte>& scratch) {
  const size_t osz = io::dtype_bits(t.out_dtype) / 8;
  uint64_t nonfinite = 0;
  for (float v : values) nonfinite += !std::isfinite(v);
  for (uint64_t off = 0; off < values.size(); off += kOutChunk) {
    const size_t m = size_t(std::min<uint64_t>(kOutChunk, values.size() - off));
    scratch.resize(m * osz);
    io::from_f32(values.subspan(off, m), t.out_dtype, scratch);
    w.write(t.name, scratch, (first + off) * osz);
  }
  return nonfinite;
}

}  // namespace

uint64_t ExecTensor::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= uint64_t(d);
  return n;
}

ShardPlan plan_shards(const std::vector<ExecTensor>& tensors, uint64_t max_shard_size) {
  ShardPlan p;
  std::vector<uint64_t> sizes;
  for (const auto& t : tensors) {
    const uint64_t b = io::PlannedTensor{t.name, t.out_dtype, t.shape}.nbytes();
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
  return p;
}

ExecReport execute(const std::vector<ExecTensor>& tensors, const TensorKernel& kernel,
                   const ExecOptions& opt) {
  ExecReport rep;
  const ShardPlan shards = plan_shards(tensors, opt.max_shard_size);
  rep.files = shards.files;
  rep.warnings.resize(tensors.size());
  rep.nonfinite.assign(tensors.size(), 0);
  rep.streamed.assign(tensors.size(), false);
  for (const auto& t : tensors)
    rep.output_bytes += io::PlannedTensor{t.name, t.out_dtype, t.shape}.nbytes();

  std::vector<fs::path> inputs = opt.inputs;
  for (const auto& t : tensors)
    for (const auto& s : t.inputs)
      for (auto& p : s.checkpoint->input_paths()) inputs.push_back(p);
  std::sort(inputs.begin(), inputs.end());
  inputs.erase(std::unique(inputs.begin(), inputs.end()), inputs.end());

  io::Staging staging(opt.out, inputs, rep.output_bytes);
  Writers writers(staging, tensors, shards, opt.metadata);
  util::MemoryBudget budget(opt.max_memory);
  std::atomic<size_t> done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::mutex progress_mu;

  util::parallel_for(tensors.size(), std::max(1u, opt.threads), [&](size_t i) {
    const ExecTensor& t = tensors[i];
    const uint64_t n = t.numel();
    const size_t N = t.inputs.size();
    auto& w = *writers.w[shards.shard_of[i]];
    std::vector<std::byte> scratch;
    bool cropped = false;
    for (const auto& s : t.inputs) cropped |= s.checkpoint->info(s.tensor).shape != t.shape;
    const bool stream = t.pointwise && !cropped && n > opt.block;
    rep.streamed[i] = stream;
    std::vector<std::span<const float>> views(N);
    if (stream) {
      const uint64_t blk = opt.block;
      util::MemoryBudget::Hold hold(budget, (N + 1) * blk * 4);
      std::vector<std::vector<float>> in(N, std::vector<float>(blk));
      std::vector<float> out(blk);
      for (uint64_t off = 0; off < n; off += blk) {
        io::check_interrupted();
        const size_t m = size_t(std::min<uint64_t>(blk, n - off));
        for (size_t k = 0; k < N; ++k) {
          decode(t.inputs[k], t, off, std::span(in[k].data(), m));
          views[k] = std::span<const float>(in[k].data(), m);
        }
        kernel(i, views, std::span(out.data(), m), off, rep.warnings[i]);
        rep.nonfinite[i] += emit(w, t, std::span<const float>(out.data(), m), off, scratch);
        if ((off / blk) % 16 == 15)
          for (const auto& s : t.inputs) {
            const uint64_t esz = io::dtype_bits(s.checkpoint->info(s.tensor).dtype) / 8;
            s.checkpoint->release_range(s.tensor, 0, (off + m) * esz);
          }
      }
    } else {
      util::MemoryBudget::Hold hold(budget, (N + 2) * n * 4);
      io::check_interrupted();
      std::vector<util::BigFloatBuffer> in(N);
      for (size_t k = 0; k < N; ++k) {
        in[k].resize(n);
        decode(t.inputs[k], t, 0, in[k]);
        t.inputs[k].checkpoint->release(t.inputs[k].tensor);  // decoded: drop the mapped pages now
        views[k] = in[k];
      }
      util::BigFloatBuffer out(n);
      kernel(i, views, out, 0, rep.warnings[i]);
      io::check_interrupted();
      rep.nonfinite[i] = emit(w, t, out, 0, scratch);
    }
    for (const auto& s : t.inputs) s.checkpoint->release(s.tensor);
    bytes_done += io::PlannedTensor{t.name, t.out_dtype, t.shape}.nbytes();
    const size_t d = ++done;
    if (opt.progress) {
      std::lock_guard<std::mutex> g(progress_mu);
      opt.progress(d, tensors.size(), bytes_done.load());
    }
  });
  rep.peak_buffer_bytes = budget.peak();
  for (auto& x : writers.w) x->finish();

  for (const auto& [src, name] : opt.copies) staging.copy_in(src, name);
  if (opt.texts)
    for (const auto& [name, text] : opt.texts(rep)) staging.write_text(name, text);
  if (shards.files.size() > 1) {
    nlohmann::json j;
    nlohmann::json wm = nlohmann::json::object();
    for (size_t i = 0; i < tensors.size(); ++i)
      wm[tensors[i].name] = shards.files[shards.shard_of[i]];
    j["metadata"] = {{"total_size", rep.output_bytes}};
    j["weight_map"] = wm;
    staging.write_text(io::kIndexName, j.dump(2) + "\n");
  }
  // Re-open what was written and check it against the plan before the rename.
  const fs::path dir = staging.materialize();
  auto ck = io::Checkpoint::open(dir);
  if (ck.names().size() != tensors.size())
    throw Error(ErrorKind::Format, "written checkpoint has the wrong number of tensors",
                dir.string());
  for (const auto& t : tensors) {
    const auto& info = ck.info(t.name);
    if (info.dtype != t.out_dtype || info.shape != t.shape)
      throw Error(ErrorKind::Format, "written tensor does not match the plan", dir.string(),
                  t.name);
  }
  staging.commit_dir();
  return rep;
}

}  // namespace deltaedit::engine
