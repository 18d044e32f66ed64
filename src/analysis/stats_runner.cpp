#include "analysis/stats_runner.h"

#include <algorithm>
#include <atomic>
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
    j["tensors"].push_back(o);
  }
  j["skipped"] = nlohmann::json::array();
  for (const auto& s : skipped)
    j["skipped"].push_back({{"name", s.name}, {"status", engine::to_string(s.status)}, {"note", s.note}});
  return j;
}

StatsReport compute_stats(const io::Checkpoint& base, const io::Checkpoint& post, unsigned threads,
                          const Progress& progress) {
  StatsReport r;
  std::vector<std::string> names;
  for (auto& p : engine::pair_tensors(base, post)) {
    if (p.status == engine::PairStatus::Editable)
      names.push_back(p.name);
    else
      r.skipped.push_back(std::move(p));
  }
  std::vector<DeltaAccum> acc(names.size());
  std::atomic<size_t> done{0};
  std::atomic<uint64_t> bytes{0};
  std::mutex mu;
  constexpr size_t kChunk = size_t(1) << 20;  // elements per chunk: bounded memory per worker
  engine::parallel_for(names.size(), threads, [&](size_t i) {
    const auto& name = names[i];
    const auto& bi = base.info(name);
    const auto& pi = post.info(name);
    const auto bdata = base.data(name);
    const auto pdata = post.data(name);
    const uint64_t n = pi.numel();
    const size_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
    std::vector<float> b(std::min<uint64_t>(n, kChunk)), p(b.size());
    for (uint64_t off = 0; off < n; off += kChunk) {
      io::check_interrupted();
      const size_t m = size_t(std::min<uint64_t>(kChunk, n - off));
      io::to_f32(bdata.subspan(off * bsz, m * bsz), bi.dtype, std::span(b.data(), m));
      io::to_f32(pdata.subspan(off * psz, m * psz), pi.dtype, std::span(p.data(), m));
      acc[i].add(std::span(b.data(), m), std::span(p.data(), m));
    }
    base.release(name);
    post.release(name);
    bytes += bi.nbytes() + pi.nbytes();
    size_t d = ++done;
    if (progress) {
      std::lock_guard<std::mutex> g(mu);
      progress(d, names.size(), bytes.load());
    }
  });
  DeltaAccum total;
  for (size_t i = 0; i < names.size(); ++i) {
    r.tensors.push_back({names[i], DeltaStats::from(acc[i])});
    total.merge(acc[i]);
  }
  r.total = DeltaStats::from(total);
  return r;
}

}  // namespace deltaedit::analysis
