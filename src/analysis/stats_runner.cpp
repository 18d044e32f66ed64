#include "analysis/stats_runner.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>

#include "io/convert.h"
#include "io/writer.h"

namespace deltaedit::analysis {

nlohmann::json StatsReport::to_json() const {
  nlohmann::json j;
  j["total"] = total.to_json();
  j["tensors"] = nlohmann::json::array();
  for (const auto& t : tensors) {
    auto o = t.stats.to_json();
    o["name"] = t.name;
    if (t.post_rows) {
      o["status"] = "resized";
      o["shared_rows"] = t.shared_rows;
      o["post_rows"] = t.post_rows;
      o["note"] = "statistics over the " + std::to_string(t.shared_rows) + " rows shared with base; post's " +
                  std::to_string(t.post_rows - t.shared_rows) + " added rows are not a delta";
    }
    j["tensors"].push_back(o);
  }
  j["skipped"] = nlohmann::json::array();
  for (const auto& s : skipped)
    j["skipped"].push_back({{"name", s.name}, {"status", io::to_string(s.status)}, {"note", s.note}});
  return j;
}

StatsReport compute_stats(const io::Checkpoint& base, const io::TensorSource& post, unsigned threads,
                          const Progress& progress) {
  StatsReport r;
  std::vector<std::string> names;
  std::vector<std::pair<int64_t, int64_t>> rows;  // (shared, post) rows of resized tensors, else (0, 0)
  for (auto& p : io::pair_tensors(base, post)) {
    if (p.status == io::PairStatus::Editable || p.status == io::PairStatus::Resized) {
      names.push_back(p.name);
      rows.emplace_back(p.shared_rows, p.post_rows);
    } else {
      r.skipped.push_back(std::move(p));
    }
  }
  std::vector<DeltaAccum> acc(names.size());
  std::atomic<size_t> done{0};
  std::atomic<uint64_t> bytes{0};
  std::mutex mu;
  // Elements per chunk: the mapped pages of a chunk are dropped once it is consumed, so resident
  // input stays at about one chunk per worker. Decoding goes through small buffers that stay in
  // cache. The accumulator's order does not depend on either size (delta_stats.h).
  constexpr size_t kChunk = size_t(1) << 20;
  constexpr size_t kBlock = 4096;
  util::parallel_for(names.size(), threads, [&](size_t i) {
    const auto& name = names[i];
    const auto& bi = base.info(name);
    const auto& pi = post.info(name);
    const auto bdata = base.data(name);
    const auto pdata = post.data(name);
    // Rows are contiguous: the shared rows of a resized tensor are the first base.numel() elements.
    const uint64_t n = bi.numel();
    const size_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
    float b[kBlock], p[kBlock];
    DeltaAccum a;  // local: no cache line shared with the other workers' accumulators
    for (uint64_t off = 0; off < n; off += kChunk) {
      io::check_interrupted();
      const size_t m = size_t(std::min<uint64_t>(kChunk, n - off));
      if (bi.dtype == io::DType::BF16 && pi.dtype == io::DType::BF16) {
        // Decoded in registers (the common case of BF16 checkpoints); the bytes may be unaligned.
        const auto* bp = bdata.subspan(off * 2, m * 2).data();
        const auto* pp = pdata.subspan(off * 2, m * 2).data();
        for (size_t k = 0; k < m; k += kBlock) {
          const size_t c = std::min(kBlock, m - k);
          uint16_t bb[kBlock], pb[kBlock];
          std::memcpy(bb, bp + 2 * k, 2 * c);
          std::memcpy(pb, pp + 2 * k, 2 * c);
          a.add_bf16(std::span<const uint16_t>(bb, c), std::span<const uint16_t>(pb, c));
        }
      } else {
      for (size_t k = 0; k < m; k += kBlock) {
        const size_t c = std::min(kBlock, m - k);
        const uint64_t at = off + k;
        io::to_f32(bdata.subspan(at * bsz, c * bsz), bi.dtype, std::span(b, c));
        io::to_f32(pdata.subspan(at * psz, c * psz), pi.dtype, std::span(p, c));
        a.add(std::span<const float>(b, c), std::span<const float>(p, c));
      }
      }
      base.release_range(name, off * bsz, m * bsz);
      post.release_range(name, off * psz, m * psz);
    }
    acc[i] = a;
    base.release(name);
    post.release(name);
    bytes += bi.nbytes() + n * (io::dtype_bits(pi.dtype) / 8);
    size_t d = ++done;
    if (progress) {
      std::lock_guard<std::mutex> g(mu);
      progress(d, names.size(), bytes.load());
    }
  });
  DeltaAccum total;
  for (size_t i = 0; i < names.size(); ++i) {
    r.tensors.push_back({names[i], DeltaStats::from(acc[i]), rows[i].first, rows[i].second});
    total.merge(acc[i]);
  }
  r.total = DeltaStats::from(total);
  return r;
}

}  // namespace deltaedit::analysis
