#include "engine/edit_engine.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "io/pairing.h"
#include "util/memory_budget.h"
#include "util/thread_pool.h"
#include "io/convert.h"
#include "io/peft.h"
#include "io/writer.h"
#include "pack/pack.h"
#include "util/boundary.h"
#include "util/checked.h"
#include "util/size.h"
#include "util/error.h"
#include "util/read_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::engine {

using io::pair_tensors;
using io::PairStatus;
using util::MemoryBudget;
using util::parallel_for;
namespace {

constexpr size_t kChunk = size_t(1) << 20;  // elements per streaming chunk
constexpr uint64_t kDefaultMaxShard = 5'000'000'000;
constexpr size_t kBlock = 4096;              // elements per in-cache block within a chunk

const char* torch_dtype_name(io::DType d) {
  switch (d) {
    case io::DType::BF16: return "bfloat16";
    case io::DType::F16: return "float16";
    case io::DType::F32: return "float32";
    case io::DType::F64: return "float64";
    default: return "";
  }
}

// The output checkpoint's shape: which tensor goes in which shard, with which dtype.
struct OutTensor {
  std::string name;
  io::DType dtype{};
  std::vector<int64_t> shape;
  size_t shard = 0;
  uint64_t nbytes() const { return io::PlannedTensor{name, dtype, shape}.nbytes(); }
};
struct OutLayout {
  bool sharded = false;
  std::vector<std::string> files;
  std::vector<OutTensor> tensors;  // in post order
  json to_json() const {
    json j{{"sharded", sharded}, {"files", files}, {"tensors", json::array()}};
    for (const auto& t : tensors)
      j["tensors"].push_back({{"name", t.name}, {"dtype", io::dtype_name(t.dtype)}, {"shape", t.shape}, {"shard", t.shard}});
    return j;
  }
  static OutLayout from_json(const json& j, const std::string& file) {
    OutLayout L;
    uint64_t total = 0;
    try {
      L.sharded = j.at("sharded").get<bool>();
      L.files = j.at("files").get<std::vector<std::string>>();
      for (const auto& t : j.at("tensors")) {
        auto d = io::parse_dtype(t.at("dtype").get<std::string>());
        if (!d) throw Error(ErrorKind::Format, "unknown dtype in layout", file);
        OutTensor o{t.at("name").get<std::string>(), *d, t.at("shape").get<std::vector<int64_t>>(),
                    t.at("shard").get<size_t>()};
        if (o.shard >= L.files.size()) throw Error(ErrorKind::Format, "layout names a missing shard", file, o.name);
        // Every size computed later from these shapes is then in range.
        total = util::checked_add(total, util::checked_nbytes(o.shape, io::dtype_bits(o.dtype), file, o.name),
                                  "checkpoint size", file, o.name);
        L.tensors.push_back(std::move(o));
      }
      for (const auto& f : L.files) io::check_shard_name(f, file);
    } catch (const json::exception& e) {
      throw Error(ErrorKind::Format, std::string("malformed layout: ") + e.what(), file);
    }
    return L;
  }
};

OutLayout plan_layout_like(const io::TensorSource& post, const std::vector<std::string>& names,
                           const std::function<io::DType(const std::string&)>& dtype_of,
                           std::optional<uint64_t> max_shard) {
  OutLayout L;
  for (const auto& n : names) {
    const auto& ti = post.info(n);
    L.tensors.push_back({n, dtype_of(n), ti.shape, 0});
  }
  // A single-file post stays one file up to the Hugging Face default shard size (5 GB); beyond
  // it the output is sharded at that size. A sharded post keeps its layout unless asked.
  uint64_t total = 0;
  for (const auto& t : L.tensors) total += t.nbytes();
  if (!max_shard && !post.is_sharded() && total > kDefaultMaxShard) max_shard = kDefaultMaxShard;
  if (max_shard) {
    std::vector<uint64_t> sizes;
    for (auto& t : L.tensors) {
      if (sizes.empty() || (sizes.back() > 0 && sizes.back() + t.nbytes() > *max_shard)) sizes.push_back(0);
      t.shard = sizes.size() - 1;
      sizes.back() += t.nbytes();
    }
    if (sizes.empty()) sizes.push_back(0);
    L.sharded = sizes.size() > 1;
    for (size_t i = 0; i < sizes.size(); ++i)
      L.files.push_back(L.sharded ? io::shard_file_name(i + 1, sizes.size()) : io::kSingleName);
  } else if (post.is_sharded()) {
    L.sharded = true;
    L.files = post.shard_names();
    for (auto& t : L.tensors) t.shard = post.shard_of(t.name);
  } else {
    L.files.push_back(io::kSingleName);
  }
  return L;
}

std::string index_json(const OutLayout& L) {
  json j;
  uint64_t total = 0;
  json wm = json::object();
  for (const auto& t : L.tensors) {
    total += t.nbytes();
    wm[t.name] = L.files[t.shard];
  }
  j["metadata"] = {{"total_size", total}};
  j["weight_map"] = wm;
  return j.dump(2) + "\n";
}

std::map<std::string, std::string> shard_metadata(const json& provenance) {
  return {{"deltaedit.version", provenance.value("version", "")},
          {"deltaedit.seed", std::to_string(provenance.value("seed", uint64_t(0)))},
          {"deltaedit.ops", provenance.value("ops", json::array()).dump()}};
}

uint64_t free_bytes(const fs::path& target) {
  fs::path p = target.empty() ? fs::current_path() : fs::absolute(target).parent_path();  // dry run without --out
  while (!p.empty() && !fs::exists(p)) p = p.parent_path();
  struct statvfs v {};
  if (p.empty() || ::statvfs(p.c_str(), &v) != 0) return 0;
  return uint64_t(v.f_bavail) * uint64_t(v.f_frsize);
}

// One writer per output shard; tensors may arrive in any order from any worker.
struct ShardWriters {
  std::vector<std::unique_ptr<io::SafetensorsWriter>> w;
  std::vector<size_t> shard_of;
  std::map<std::string, size_t, std::less<>> pos;
  ShardWriters(io::Staging& staging, const OutLayout& L, const std::map<std::string, std::string>& md) {
    std::vector<std::vector<io::PlannedTensor>> per(L.files.size());
    for (size_t i = 0; i < L.tensors.size(); ++i) {
      const auto& t = L.tensors[i];
      per[t.shard].push_back({t.name, t.dtype, t.shape});
      pos[t.name] = t.shard;
    }
    for (size_t s = 0; s < per.size(); ++s)
      w.push_back(std::make_unique<io::SafetensorsWriter>(staging.create(L.files[s]),
                                                          (staging.target() / L.files[s]).string(), std::move(per[s]), md));
  }
  io::SafetensorsWriter& of(std::string_view name) { return *w[pos.find(name)->second]; }
  void finish() {
    for (auto& x : w) x->finish();
  }
};

// Walks a tensor in chunks of kChunk elements and blocks of kBlock (small buffers that stay in
// cache): block(at, count, delta, base, post) gets the f32 base, post and Δ = post − base (delta
// and post are null when post is empty); chunk_done(elem_offset, elems) follows each chunk, which
// is the moment to drop the input pages consumed. Checks for SIGINT/SIGTERM between chunks.
template <class Block, class ChunkDone>
void for_each_delta_block(std::span<const std::byte> base_bytes, io::DType base_dt, std::span<const std::byte> post_bytes,
                          io::DType post_dt, uint64_t n, Block&& block, ChunkDone&& chunk_done) {
  const size_t bsz = io::dtype_bits(base_dt) / 8, psz = io::dtype_bits(post_dt) / 8;
  const bool have_post = !post_bytes.empty();
  float b[kBlock], d[kBlock], p[kBlock];
  for (uint64_t off = 0; off < n; off += kChunk) {
    io::check_interrupted();
    const size_t m = size_t(std::min<uint64_t>(kChunk, n - off));
    for (size_t k = 0; k < m; k += kBlock) {
      const size_t c = std::min(kBlock, m - k);
      const uint64_t at = off + k;
      io::to_f32(base_bytes.subspan(at * bsz, c * bsz), base_dt, std::span(b, c));
      if (have_post) {
        io::to_f32(post_bytes.subspan(at * psz, c * psz), post_dt, std::span(p, c));
        for (size_t i = 0; i < c; ++i) d[i] = p[i] - b[i];
      }
      block(at, c, have_post ? static_cast<const float*>(d) : nullptr, static_cast<const float*>(b),
            have_post ? static_cast<const float*>(p) : nullptr);
    }
    chunk_done(off, uint64_t(m));
  }
}

// W' = base + Δ' in f32, rounded once into the output dtype; streams chunks to `sink`.
// Also accumulates edit statistics against Δ = post − base when post is given (acc).
// Returns the count of values non-finite in the output that no input had: the base value is
// finite and so is the other input — post's value in an edit, Δ' itself when rebuilding from a
// pack (no post) — and yet the written value is NaN/Inf (an op or the output dtype's range made it).
// release(elem_offset, elems) is called once each chunk of the inputs has been consumed.
// Δ' comes block by block from edited(at, count, delta, scratch) → pointer to `count` values:
// either a slice of a whole-tensor buffer, or computed into `scratch` from the block's Δ (which
// is null when no post is given) by pointwise ops.
template <class Edited, class Sink, class Release>
uint64_t compose_output(std::span<const std::byte> base_bytes, io::DType base_dt, std::span<const std::byte> post_bytes,
                        io::DType post_dt, uint64_t n, Edited&& edited, io::DType out_dt, analysis::EditAccum* acc,
                        Sink&& sink, Release&& release) {
  const size_t osz = io::dtype_bits(out_dt) / 8;
  float w[kBlock], scratch[kBlock];
  const auto o = std::make_unique_for_overwrite<std::byte[]>(std::min<uint64_t>(n, kChunk) * osz);
  uint64_t bad = 0;
  analysis::EditAccum local;  // added in element order; copied out at the end (acc starts empty)
  for_each_delta_block(
      base_bytes, base_dt, post_bytes, post_dt, n,
      [&](uint64_t at, size_t c, const float* d, const float* b, const float* p) {
        const float* e = edited(at, c, d, scratch);
        if (acc) local.add(std::span<const float>(d, c), std::span(e, c));
        const float* q = p ? p : e;  // the other input
        constexpr float kMax = std::numeric_limits<float>::max();
        uint32_t newly_bad = 0;  // finite inputs, non-finite sum
        for (size_t i = 0; i < c; ++i) {
          w[i] = b[i] + e[i];
          newly_bad += (std::fabs(w[i]) <= kMax ? 0u : 1u) & (std::fabs(b[i]) <= kMax ? 1u : 0u) &
                       (std::fabs(q[i]) <= kMax ? 1u : 0u);
        }
        bad += newly_bad;
        const size_t k = size_t(at % kChunk);  // position in the chunk's output buffer
        auto ns = io::from_f32(std::span<const float>(w, c), out_dt, std::span(o.get() + k * osz, c * osz));
        bad += ns.overflow;
      },
      [&](uint64_t off, uint64_t m) {
        sink(std::span<const std::byte>(o.get(), m * osz), off * osz);
        release(off, m);
      });
  if (acc) acc->merge(local);
  return bad;
}

// compose_output's Δ' from a whole-tensor buffer.
inline auto from_buffer(std::span<const float> edited) {
  return [edited](uint64_t at, size_t, const float*, float*) { return edited.data() + at; };
}

// Raw copy or dtype conversion of a tensor that is not edited. release(byte_offset, bytes) is
// called once each piece of the source has been consumed.
template <class Sink, class Release>
void copy_tensor(std::span<const std::byte> src, io::DType src_dt, io::DType out_dt, uint64_t numel, Sink&& sink,
                 Release&& release) {
  if (src_dt == out_dt) {
    constexpr size_t kBytes = size_t(64) << 20;
    for (uint64_t off = 0; off < src.size(); off += kBytes) {
      io::check_interrupted();
      const uint64_t len = std::min<uint64_t>(kBytes, src.size() - off);
      sink(src.subspan(off, len), off);
      release(off, len);
    }
    return;
  }
  const size_t isz = io::dtype_bits(src_dt) / 8, osz = io::dtype_bits(out_dt) / 8;
  float f[kBlock];
  const auto o = std::make_unique_for_overwrite<std::byte[]>(std::min<uint64_t>(numel, kChunk) * osz);
  for (uint64_t off = 0; off < numel; off += kChunk) {
    const size_t m = size_t(std::min<uint64_t>(kChunk, numel - off));
    for (size_t k = 0; k < m; k += kBlock) {
      const size_t c = std::min(kBlock, m - k);
      io::to_f32(src.subspan((off + k) * isz, c * isz), src_dt, std::span(f, c));
      io::from_f32(std::span<const float>(f, c), out_dt, std::span(o.get() + k * osz, c * osz));
    }
    sink(std::span<const std::byte>(o.get(), m * osz), off * osz);
    release(off * isz, uint64_t(m) * isz);
  }
}

// Pack components are spilled to a scratch file as they are produced, then assembled into
// pack.safetensors once every size is known (memory stays at one tensor).
struct PackSpill {
  std::mutex mu;
  int fd = -1;
  std::string label;
  uint64_t size = 0;
  struct Entry {
    std::string name;
    io::DType dtype;
    std::vector<int64_t> shape;
    uint64_t offset, bytes;
  };
  std::vector<Entry> entries;
  std::map<std::string, json> tensor_meta;
  // An unlinked scratch file beside the output: it vanishes with the process, whatever happens.
  explicit PackSpill(const fs::path& target) {
    const fs::path p = target.parent_path() / fmt::format(".{}.deltaedit-scratch-{}", target.filename().string(), ::getpid());
    label = p.string();
    fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw Error(ErrorKind::Io, std::string("cannot create scratch file: ") + std::strerror(errno), label);
    ::unlink(p.c_str());
  }
  ~PackSpill() {
    if (fd >= 0) ::close(fd);
  }
  void add(const std::string& tensor, const OutTensor& ot, pack::Encoded&& e) {
    std::lock_guard<std::mutex> g(mu);
    json parts = json::array();
    for (auto& p : e.parts) {
      io::pwrite_all(fd, p.bytes.data(), p.bytes.size(), size, label);
      entries.push_back({tensor + "::" + p.suffix, p.dtype, p.shape, size, p.bytes.size()});
      size += p.bytes.size();
      parts.push_back(p.suffix);
    }
    tensor_meta[tensor] = {{"name", tensor},     {"encoding", e.encoding},       {"params", e.params},
                           {"parts", parts},     {"dtype", io::dtype_name(ot.dtype)}, {"shape", ot.shape}};
  }
  void assemble(io::Staging& staging, const std::map<std::string, std::string>& md) {
    std::vector<io::PlannedTensor> planned;
    for (const auto& e : entries) planned.push_back({e.name, e.dtype, e.shape});
    io::SafetensorsWriter w(staging.create(pack::kPackFile), (staging.target() / pack::kPackFile).string(), planned, md);
    std::vector<std::byte> buf;
    for (const auto& e : entries) {
      buf.resize(e.bytes);
      uint64_t got = 0;
      while (got < e.bytes) {
        ssize_t r = ::pread(fd, buf.data() + got, e.bytes - got, off_t(e.offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) throw Error(ErrorKind::Io, "read back of scratch file failed", label);
        got += uint64_t(r);
      }
      w.write(e.name, buf);
    }
    w.finish();
  }
};

// Re-open what was written and check it against the plan before the rename.
void validate_output(const fs::path& dir, const OutLayout& L) {
  auto ck = io::Checkpoint::open(dir);
  if (ck.names().size() != L.tensors.size())
    throw Error(ErrorKind::Internal, "written checkpoint has the wrong number of tensors", dir.string());
  for (const auto& t : L.tensors) {
    const auto& i = ck.info(t.name);
    if (i.dtype != t.dtype || i.shape != t.shape)
      throw Error(ErrorKind::Internal, "written tensor does not match the plan", dir.string(), t.name);
  }
}

json scope_json(const OpChain& chain, const io::TensorSource& post, const std::vector<std::string>& editable) {
  json scope = json::array();
  for (size_t i = 0; i < chain.ops.size(); ++i) {
    uint64_t tensors = 0, params = 0;
    for (const auto& n : editable) {
      const auto& ti = post.info(n);
      if (chain.touches(i, n, ti.shape)) {
        ++tensors;
        params += ti.numel();
      }
    }
    scope.push_back({{"op", chain.specs[i].text}, {"tensors", tensors}, {"params", params}});
  }
  return scope;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

OpChain OpChain::build(const std::vector<std::string>& specs, uint64_t seed, const std::string& include,
                       const std::string& exclude) {
  OpChain c;
  c.seed = seed;
  if (specs.empty()) throw Error(ErrorKind::Usage, "no --op given; see `deltaedit ops` for the list");
  for (const auto& s : specs) {
    auto spec = edit::parse_op_spec(s);
    c.ops.push_back(edit::make_op(spec));
    auto f = edit::name_filter(spec);
    c.filters.emplace_back(util::NameRegex(f.include, "op '" + spec.name + "' include"),
                           util::NameRegex(f.exclude, "op '" + spec.name + "' exclude"));
    c.specs.push_back(std::move(spec));
  }
  c.include = util::NameRegex(include, "--include");
  c.exclude = util::NameRegex(exclude, "--exclude");
  return c;
}

bool OpChain::needs_grad() const {
  return std::any_of(ops.begin(), ops.end(), [](const auto& o) { return o->needs_grad(); });
}

bool OpChain::touches(size_t i, const std::string& name, std::span<const int64_t> shape) const {
  return util::selected(include, exclude, name) && util::selected(filters[i].first, filters[i].second, name) &&
         ops[i]->applies_to(shape);
}

bool OpChain::touches_any(const std::string& name, std::span<const int64_t> shape) const {
  for (size_t i = 0; i < ops.size(); ++i)
    if (touches(i, name, shape)) return true;
  return false;
}

edit::TensorContext OpChain::context(size_t i, std::string_view name, std::span<const int64_t> shape) const {
  edit::TensorContext ctx;
  ctx.name = name;
  ctx.shape = shape;
  ctx.seed = seed;
  ctx.op_index = uint32_t(i);
  return ctx;
}

json OpChain::describe() const {
  json a = json::array();
  for (size_t i = 0; i < ops.size(); ++i) a.push_back({{"op", std::string(ops[i]->name())}, {"params", ops[i]->params()}});
  return a;
}

namespace {

// Edits one tensor whose touching ops are all pointwise, two-pass or multi-pass, chunk by chunk
// with no whole-tensor buffer: each two- or multi-pass op first observes the tensor as the ops
// before it leave it (one more read of the inputs per pass, from the page cache), then one pass
// composes the output.
// Appends the names of the ops applied to `ops`; returns compose_output's count.
template <class Sink, class Release>
uint64_t stream_edit(const OpChain& chain, const io::Checkpoint& base, const io::TensorSource& post, const OutTensor& ot,
                     analysis::EditAccum& acc, std::vector<std::string>& ops, Sink&& sink, Release&& release) {
  const auto& bi = base.info(ot.name);
  const auto& pi = post.info(ot.name);
  const uint64_t n = pi.numel();
  struct Step {
    const edit::Op* op;
    edit::TensorContext ctx;
    std::unique_ptr<edit::Op::State> state;  // set once a two-pass op has observed the tensor
  };
  std::vector<Step> steps;
  for (size_t k = 0; k < chain.ops.size(); ++k) {
    if (!chain.touches(k, ot.name, pi.shape)) continue;
    steps.push_back({chain.ops[k].get(), chain.context(k, ot.name, pi.shape), nullptr});
    ops.push_back(std::string(chain.ops[k]->name()));
  }
  const auto run_steps = [&](size_t upto, float* e, size_t c, uint64_t at) {
    for (size_t s = 0; s < upto; ++s) {
      const Step& st = steps[s];
      if (st.state)
        st.op->apply_observed(*st.state, std::span<float>(e, c), at, st.ctx);
      else
        st.op->apply_block(std::span<float>(e, c), at, st.ctx);
    }
  };
  for (size_t k = 0; k < steps.size(); ++k) {
    if (!steps[k].op->observes()) continue;
    auto state = steps[k].op->observe_begin(steps[k].ctx);
    float e[kBlock];
    do {  // one pass for a two-pass op, as many as it asks for a multi-pass op
      for_each_delta_block(
          base.data(ot.name), bi.dtype, post.data(ot.name), pi.dtype, n,
          [&](uint64_t at, size_t c, const float* d, const float*, const float*) {
            std::copy(d, d + c, e);
            run_steps(k, e, c, at);
            steps[k].op->observe(*state, std::span<const float>(e, c), at);
          },
          release);
    } while (steps[k].op->observe_again(*state));
    steps[k].op->observe_end(*state);
    steps[k].state = std::move(state);
  }
  return compose_output(
      base.data(ot.name), bi.dtype, post.data(ot.name), pi.dtype, n,
      [&](uint64_t at, size_t c, const float* delta, float* e) {
        std::copy(delta, delta + c, e);
        run_steps(steps.size(), e, c, at);
        return static_cast<const float*>(e);
      },
      ot.dtype, &acc, sink, release);
}

// The rows post added to a resized tensor (elements `from` .. numel of post), copied into the
// output in its dtype after the edited shared rows.
void write_added_rows(const io::TensorSource& post, const OutTensor& ot, uint64_t from, io::SafetensorsWriter& w) {
  const auto& pi = post.info(ot.name);
  const auto data = post.data(ot.name);
  const uint64_t psz = io::dtype_bits(pi.dtype) / 8, osz = io::dtype_bits(ot.dtype) / 8, n = pi.numel();
  if (pi.dtype == ot.dtype) {
    w.write(ot.name, data.subspan(from * psz, (n - from) * psz), from * osz);
    return;
  }
  float f[kBlock];
  std::vector<std::byte> o(kBlock * osz);
  for (uint64_t at = from; at < n; at += kBlock) {
    const size_t c = size_t(std::min<uint64_t>(kBlock, n - at));
    io::to_f32(data.subspan(at * psz, c * psz), pi.dtype, std::span<float>(f, c));
    io::from_f32(std::span<const float>(f, c), ot.dtype, std::span<std::byte>(o.data(), c * osz));
    w.write(ot.name, std::span<const std::byte>(o.data(), c * osz), at * osz);
  }
}

}  // namespace

TensorEdit edit_tensor(const OpChain& chain, const io::Checkpoint& base, const io::TensorSource& post,
                       const std::string& name, const io::SafetensorsFile* grad) {
  const auto& bi = base.info(name);
  const auto& pi = post.info(name);
  // A resized tensor (post has rows added) is edited on the rows it shares with base: the first
  // base.numel() elements of both (rows are contiguous).
  const bool resized = io::rows_added(bi.shape, pi.shape);
  const std::vector<int64_t>& shape = resized ? bi.shape : pi.shape;
  const uint64_t n = resized ? bi.numel() : pi.numel();
  TensorEdit te;
  te.edited.resize(n);
  {
    const size_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
    for_each_delta_block(
        base.data(name), bi.dtype, post.data(name), pi.dtype, n,
        [&](uint64_t at, size_t c, const float* d, const float*, const float*) {
          std::copy(d, d + c, te.edited.data() + at);
        },
        // The inputs are read again (from the page cache) when the output is composed;
        // meanwhile their pages need not stay mapped while the ops run.
        [&](uint64_t off, uint64_t m) {
          base.release_range(name, off * bsz, m * bsz);
          post.release_range(name, off * psz, m * psz);
        });
  }
  std::vector<float> g;
  for (size_t i = 0; i < chain.ops.size(); ++i) {
    io::check_interrupted();
    if (!chain.touches(i, name, shape)) continue;
    edit::TensorContext ctx = chain.context(i, name, shape);
    if (chain.ops[i]->needs_grad()) {
      if (g.empty()) {
        const auto* gi = grad ? grad->header().find(name) : nullptr;
        if (!gi || gi->numel() != n)
          throw Error(ErrorKind::Usage, "the gradient file has no gradient of this shape", grad ? grad->path().string() : "",
                      name);
        g.resize(n);
        io::to_f32(grad->data(*gi), gi->dtype, g);
      }
      ctx.grad = g;
    }
    auto outcome = chain.ops[i]->apply(te.edited, ctx);
    if (!outcome.touched) continue;
    te.applied.push_back(std::string(chain.ops[i]->name()));
    te.factors = std::move(outcome.factors);
  }
  return te;
}

Increments edit_increments(const OpChain& chain, const io::Checkpoint& base, const io::TensorSource& post,
                           const io::SafetensorsFile* grad) {
  Increments inc;
  for (const auto& p : pair_tensors(base, post)) {
    if (p.status != PairStatus::Editable || !chain.touches_any(p.name, post.info(p.name).shape)) continue;
    auto te = edit_tensor(chain, base, post, p.name, grad);
    const auto& bi = base.info(p.name);
    const auto& pi = post.info(p.name);
    std::vector<float> b(pi.numel()), q(pi.numel());
    io::to_f32(base.data(p.name), bi.dtype, b);
    io::to_f32(post.data(p.name), pi.dtype, q);
    for (size_t i = 0; i < q.size(); ++i) {
      const float delta = q[i] - b[i];
      inc.delta_sumsq += double(delta) * double(delta);
      te.edited[i] = b[i] + te.edited[i];  // W' before rounding, as the writer forms it
    }
    // W' in the output dtype (post's), back in f32, minus W_post.
    if (pi.dtype != io::DType::F32 && io::is_compute_dtype(pi.dtype)) {
      std::vector<std::byte> rounded(q.size() * (io::dtype_bits(pi.dtype) / 8));
      io::from_f32(te.edited, pi.dtype, rounded);
      io::to_f32(rounded, pi.dtype, te.edited);
    }
    for (size_t i = 0; i < q.size(); ++i) te.edited[i] -= q[i];
    inc.d[p.name].assign(te.edited.begin(), te.edited.end());
    post.release(p.name);
  }
  return inc;
}

uint64_t parse_size(const std::string& text) { return util::parse_size(text); }

json EditResult::to_json() const {
  json j;
  j["plan"] = plan;
  j["total"] = total.to_json();
  j["nonfinite_out"] = nonfinite_out;
  j["output_bytes"] = output_bytes;
  j["tensors"] = json::array();
  for (const auto& t : tensors) {
    json o{{"name", t.name}, {"action", t.action}, {"ops", t.ops}, {"numel", t.numel}};
    if (t.action == "edited") o["stats"] = t.stats.to_json();
    if (t.nonfinite_out) o["nonfinite_out"] = t.nonfinite_out;
    if (!t.encoding.empty()) {
      o["encoding"] = t.encoding;
      o["stored_bytes"] = t.stored_bytes;
      o["bits_per_param"] = t.numel ? 8.0 * double(t.stored_bytes) / double(t.numel) : 0.0;
    }
    j["tensors"].push_back(o);
  }
  return j;
}

EditResult run_edit(const EditRequest& req, const Progress& progress) {
  // 1. Everything that can be checked without reading weights.
  OpChain chain = OpChain::build(req.ops, req.seed, req.include, req.exclude);
  if (chain.needs_grad() && !req.grad)
    throw Error(ErrorKind::Usage, "an op needs gradients (by=grad): pass --grad G.safetensors (see `deltaedit grad`)");
  if (req.dtype && !io::is_compute_dtype(*req.dtype))
    throw Error(ErrorKind::Usage, "--dtype must be one of F32, BF16, F16, F64");
  if (!req.dry_run && fs::exists(req.out))
    throw Error(ErrorKind::Usage, "output already exists; choose a new --out or remove it first", req.out.string());

  // 2. Open and pair the inputs; plan every tensor.
  auto base = io::Checkpoint::open(req.base);
  const auto post_source = io::open_post(req.post, base);
  const io::TensorSource& post = *post_source;
  std::optional<io::SafetensorsFile> grad;
  if (req.grad) grad = io::SafetensorsFile::open(*req.grad);
  auto pairs = pair_tensors(base, post);
  std::vector<std::string> order, editable;
  std::map<std::string, bool> edit_it;
  json skipped = json::array(), resized = json::array();
  std::set<std::string> resized_names;  // edited on their shared rows (not in packs)
  for (const auto& p : pairs) {
    if (p.status == PairStatus::OnlyBase) {
      skipped.push_back({{"name", p.name}, {"status", to_string(p.status)}, {"note", p.note}});
      continue;
    }
    order.push_back(p.name);
    const bool shared_rows = p.status == PairStatus::Resized && !req.pack;
    const auto& shape = shared_rows ? base.info(p.name).shape : post.info(p.name).shape;
    bool e = (p.status == PairStatus::Editable || shared_rows) && chain.touches_any(p.name, shape);
    edit_it[p.name] = e;
    if (p.status == PairStatus::Editable) editable.push_back(p.name);
    if (shared_rows) {
      if (e) resized_names.insert(p.name);
      resized.push_back({{"name", p.name}, {"status", to_string(p.status)}, {"shared_rows", p.shared_rows},
                         {"post_rows", p.post_rows},
                         {"note", e ? fmt::format("the {} rows shared with base edited; post's {} added rows copied "
                                                  "unchanged", p.shared_rows, p.post_rows - p.shared_rows)
                                    : std::string("not touched by the ops; copied from post unchanged")}});
    } else if (p.status != PairStatus::Editable) {
      skipped.push_back({{"name", p.name}, {"status", to_string(p.status)},
                         {"note", p.status == PairStatus::Resized ? p.note + " (a pack stores it whole)" : p.note}});
    }
  }
  if (chain.needs_grad()) {
    for (size_t i = 0; i < chain.ops.size(); ++i) {
      if (!chain.ops[i]->needs_grad()) continue;
      for (const auto& n : editable) {
        const auto& ti = post.info(n);
        if (!chain.touches(i, n, ti.shape)) continue;
        const auto* gi = grad->header().find(n);
        if (!gi) throw Error(ErrorKind::Usage, "op '" + chain.specs[i].text + "' needs this tensor's gradient but the file lacks it",
                             grad->path().string(), n);
        if (gi->shape != ti.shape || !io::is_compute_dtype(gi->dtype))
          throw Error(ErrorKind::Usage, "gradient has a different shape or a non-float dtype", grad->path().string(), n);
      }
    }
  }
  auto dtype_of = [&](const std::string& n) {
    io::DType d = post.info(n).dtype;
    return req.dtype && io::is_compute_dtype(d) ? *req.dtype : d;
  };
  OutLayout layout = plan_layout_like(post, order, dtype_of, req.max_shard_size);
  uint64_t out_bytes = 0, edited_params = 0, edited_count = 0, streamed_count = 0;
  for (const auto& t : layout.tensors) {
    out_bytes += t.nbytes();
    if (edit_it.at(t.name)) {
      edited_params += resized_names.count(t.name) ? base.info(t.name).numel() : post.info(t.name).numel();
      ++edited_count;
    }
  }
  // Whether a tensor goes through the streaming path: a full checkpoint, and every op that
  // touches it pointwise or two-pass.
  const auto streams = [&](const std::string& name) {
    if (req.pack || !req.stream_pointwise || resized_names.count(name)) return false;
    const auto& shape = post.info(name).shape;
    for (size_t k = 0; k < chain.ops.size(); ++k)
      if (chain.touches(k, name, shape) && !chain.ops[k]->pointwise() && !chain.ops[k]->observes()) return false;
    return true;
  };
  // Buffer bytes one tensor holds while in flight. Edited: Δ' in f32, the largest op workspace,
  // the gradient (f32) when an op needs it, and for a pack the composed output plus its encoding
  // (at most a copy of Δ'); nothing when it streams. Copied into a pack: the bytes and their copy
  // in the encoding. Copied into a checkpoint: nothing (written from the mapped input).
  struct TensorPlan {
    bool streamed = false;
    uint64_t need = 0;
  };
  std::vector<TensorPlan> tplan(layout.tensors.size());  // by position in layout.tensors
  uint64_t largest_need = 0, sum_largest = 0;
  {
    std::vector<uint64_t> needs;
    for (size_t i = 0; i < layout.tensors.size(); ++i) {
      const OutTensor& t = layout.tensors[i];
      const auto& ti = post.info(t.name);
      const uint64_t n = ti.numel();
      uint64_t b = 0;
      if (!edit_it.at(t.name)) {
        b = (req.pack ? 2 * t.nbytes() : 0) + post.formed_bytes(t.name);
      } else if (streams(t.name)) {
        tplan[i].streamed = true;
        ++streamed_count;
      } else {
        uint64_t ws = 0;
        bool grad_needed = false;
        for (size_t k = 0; k < chain.ops.size(); ++k) {
          if (!chain.touches(k, t.name, ti.shape)) continue;
          ws = std::max(ws, chain.ops[k]->workspace_bytes(ti.shape));
          grad_needed |= chain.ops[k]->needs_grad();
        }
        b = n * 4 + ws + (grad_needed ? n * 4 : 0) + (req.pack ? t.nbytes() + n * 4 : 0);
      }
      if (tplan[i].streamed) b = post.formed_bytes(t.name);  // a tensor an adapter forms
      tplan[i].need = b;
      needs.push_back(b);
    }
    std::sort(needs.rbegin(), needs.rend());
    if (!needs.empty()) largest_need = needs[0];
    for (size_t k = 0; k < needs.size() && k < std::max(1u, req.threads); ++k) sum_largest += needs[k];
  }
  const unsigned workers = std::max(1u, req.threads);
  // Held buffers are bounded by the budget (or the largest tensor, which runs alone); each worker
  // adds its streaming chunk buffers and the mapped pages of the chunk it is reading (≤ 32 MB),
  // and the process its code and small state (~32 MB).
  const uint64_t mem =
      std::min(sum_largest, std::max(req.max_memory, largest_need)) + uint64_t(workers) * (32u << 20) + (32u << 20);
  const uint64_t avail = free_bytes(req.out);

  json provenance{{"tool", "deltaedit"},
                  {"version", kVersion},
                  {"base", req.base.string()},
                  {"post", req.post.string()},
                  {"seed", req.seed},
                  {"ops", chain.describe()},
                  {"op_specs", json::array()},
                  {"include", req.include},
                  {"exclude", req.exclude},
                  {"dtype", req.dtype ? json(io::dtype_name(*req.dtype)) : json(nullptr)}};
  for (const auto& s : chain.specs) provenance["op_specs"].push_back(s.text);

  EditResult result;
  result.plan = {{"tensors", order.size()},
                 {"edited_tensors", edited_count},
                 {"edited_params", edited_params},
                 {"streamed_tensors", streamed_count},
                 {"copied_tensors", order.size() - edited_count},
                 {"skipped", skipped},
                 {"resized", resized},
                 {"scope", scope_json(chain, post, editable)},
                 {"output", req.out.string()},
                 {"output_kind", req.pack ? "delta pack" : "checkpoint"},
                 {"output_files", layout.files},
                 {"checkpoint_bytes", out_bytes},
                 {"free_bytes", avail},
                 {"peak_memory_estimate", mem},
                 {"max_memory", req.max_memory},
                 // reads both inputs and writes the output: ~0.5 GB/s per worker measured on 2 cores
                 // (warm page cache, fsync included); SVDs (lowrank) add their own time
                 {"time_estimate_s", double(base.total_bytes() + post.total_bytes() + out_bytes) / (500e6 * workers)},
                 {"warnings", post.warnings()}};
  for (size_t i = 0; i < chain.ops.size(); ++i)
    if (result.plan["scope"][i]["tensors"].get<uint64_t>() == 0)
      result.plan["warnings"].push_back("op '" + chain.specs[i].text + "' matches no tensor");
  if (req.dry_run) return result;

  // 3. Write into staging, validate, rename.
  std::vector<fs::path> inputs = base.input_paths();
  for (auto& p : post.input_paths()) inputs.push_back(p);
  if (req.grad) inputs.push_back(*req.grad);
  io::Staging staging(req.out, inputs, req.pack ? 0 : out_bytes);
  const auto md = shard_metadata(provenance);
  std::unique_ptr<ShardWriters> writers;
  std::unique_ptr<PackSpill> spill;
  if (req.pack)
    spill = std::make_unique<PackSpill>(staging.target());
  else
    writers = std::make_unique<ShardWriters>(staging, layout, md);

  result.tensors.resize(layout.tensors.size());
  std::vector<analysis::EditAccum> accs(layout.tensors.size());
  std::atomic<size_t> done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::mutex progress_mu;
  MemoryBudget budget(req.max_memory);
  parallel_for(layout.tensors.size(), workers, [&](size_t i) {
    const OutTensor& ot = layout.tensors[i];
    const auto& pi = post.info(ot.name);
    TensorOutcome& out = result.tensors[i];
    out.name = ot.name;
    out.numel = pi.numel();
    if (edit_it.at(ot.name)) {
      const auto& bi = base.info(ot.name);
      const uint64_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
      const auto release_both = [&](uint64_t off, uint64_t m) {
        base.release_range(ot.name, off * bsz, m * bsz);
        post.release_range(ot.name, off * psz, m * psz);
      };
      out.action = "edited";
      if (tplan[i].streamed) {
        MemoryBudget::Hold hold(budget, tplan[i].need);
        auto& w = writers->of(ot.name);
        out.nonfinite_out = stream_edit(
            chain, base, post, ot, accs[i], out.ops,
            [&](std::span<const std::byte> b, uint64_t off) { w.write(ot.name, b, off); }, release_both);
      } else {
        MemoryBudget::Hold hold(budget, tplan[i].need);
        TensorEdit te = edit_tensor(chain, base, post, ot.name, grad ? &*grad : nullptr);
        out.ops = te.applied;
        if (req.pack) {
          std::vector<std::byte> full(ot.nbytes());
          out.nonfinite_out = compose_output(base.data(ot.name), bi.dtype, post.data(ot.name), pi.dtype, te.edited.size(),
                                             from_buffer(te.edited), ot.dtype, &accs[i],
                                             [&](std::span<const std::byte> b, uint64_t off) {
                                               std::memcpy(full.data() + off, b.data(), b.size());
                                             }, release_both);
          auto enc = pack::encode_delta(te.edited, ot.shape, full, te.factors);
          out.encoding = enc.encoding;
          out.stored_bytes = enc.stored_bytes();
          spill->add(ot.name, ot, std::move(enc));
        } else {
          auto& w = writers->of(ot.name);
          out.nonfinite_out = compose_output(base.data(ot.name), bi.dtype, post.data(ot.name), pi.dtype, te.edited.size(),
                                             from_buffer(te.edited), ot.dtype, &accs[i],
                                             [&](std::span<const std::byte> b, uint64_t off) {
                                               w.write(ot.name, b, off);
                                             }, release_both);
          if (resized_names.count(ot.name)) write_added_rows(post, ot, te.edited.size(), w);
        }
      }
      out.stats = analysis::EditStats::from(accs[i]);
      base.release(ot.name);
    } else {
      out.action = ot.dtype == pi.dtype ? "copied" : "converted";
      const auto release_post = [&](uint64_t off, uint64_t bytes) { post.release_range(ot.name, off, bytes); };
      MemoryBudget::Hold hold(budget, req.pack ? 0 : tplan[i].need);
      if (req.pack) {
        MemoryBudget::Hold hold(budget, tplan[i].need);
        std::vector<std::byte> full(ot.nbytes());
        copy_tensor(post.data(ot.name), pi.dtype, ot.dtype, pi.numel(),
                    [&](std::span<const std::byte> b, uint64_t off) { std::memcpy(full.data() + off, b.data(), b.size()); },
                    release_post);
        auto enc = pack::encode_raw(full, ot.dtype, ot.shape);
        out.encoding = enc.encoding;
        out.stored_bytes = enc.stored_bytes();
        spill->add(ot.name, ot, std::move(enc));
      } else {
        auto& w = writers->of(ot.name);
        copy_tensor(post.data(ot.name), pi.dtype, ot.dtype, pi.numel(),
                    [&](std::span<const std::byte> b, uint64_t off) { w.write(ot.name, b, off); }, release_post);
      }
    }
    post.release(ot.name);
    bytes_done += ot.nbytes();
    size_t d = ++done;
    if (progress) {
      std::lock_guard<std::mutex> g(progress_mu);
      progress(d, layout.tensors.size(), bytes_done.load());
    }
  });

  analysis::EditAccum total;
  for (size_t i = 0; i < accs.size(); ++i) {
    total.merge(accs[i]);
    result.nonfinite_out += result.tensors[i].nonfinite_out;
  }
  result.total = analysis::EditStats::from(total);
  result.output_bytes = out_bytes;

  // The checkpoint's deltaedit.json: provenance + per-tensor outcome (identical from apply).
  json ck_meta = provenance;
  ck_meta["tensors"] = json::array();
  for (const auto& t : result.tensors) {
    json o{{"name", t.name}, {"action", t.action}, {"ops", t.ops}};
    if (t.action == "edited") o["stats"] = t.stats.to_json();
    if (t.nonfinite_out) o["nonfinite_out"] = t.nonfinite_out;
    ck_meta["tensors"].push_back(o);
  }
  ck_meta["total"] = result.total.to_json();
  ck_meta["skipped"] = skipped;
  const std::string ck_meta_text = ck_meta.dump(2) + "\n";

  // config.json: byte for byte unless the dtype changed.
  std::optional<std::string> config_text;
  if (const auto config_path = post.config_path()) {
    config_text = util::read_file(*config_path);
    if (req.dtype) {
      json c = io::parse_json_strict(*config_text, config_path->string());
      for (const char* k : {"torch_dtype", "dtype"})
        if (c.contains(k)) c[k] = torch_dtype_name(*req.dtype);
      config_text = c.dump(2) + "\n";
    }
  }
  for (const auto& e : post.extra_files()) staging.copy_in(e, e.filename().string());
  if (req.pack) {
    json pm = {{"format", pack::kPackFormat}, {"layout", layout.to_json()}, {"tensors", json::array()},
               {"checkpoint_meta", ck_meta}, {"shard_metadata", md}};
    for (const auto& t : layout.tensors) pm["tensors"].push_back(spill->tensor_meta.at(t.name));
    uint64_t stored = 0;
    for (const auto& t : result.tensors) stored += t.stored_bytes;
    json pack_meta = provenance;
    pack_meta["pack"] = pm;
    pack_meta["pack_bits_per_param"] = post.total_params() ? 8.0 * double(stored) / double(post.total_params()) : 0.0;
    spill->assemble(staging, {{"deltaedit.pack", pack::kPackFormat}});
    if (config_text) staging.write_text("config.json", *config_text);
    staging.write_text("deltaedit.json", pack_meta.dump(2) + "\n");
    io::SafetensorsFile::open(staging.materialize() / pack::kPackFile);  // validate before the rename
  } else {
    writers->finish();
    if (config_text) staging.write_text("config.json", *config_text);
    staging.write_text("deltaedit.json", ck_meta_text);
    if (layout.sharded) staging.write_text(io::kIndexName, index_json(layout));
    validate_output(staging.materialize(), layout);
  }
  staging.commit_dir();
  return result;
}

EditResult run_apply(const ApplyRequest& req, const Progress& progress) {
  std::error_code ec;
  if (!fs::exists(req.pack, ec)) throw Error(ErrorKind::Io, "no such delta pack", req.pack.string());
  if (!pack::is_pack(req.pack))
    throw Error(ErrorKind::Format, "not a delta pack (needs pack.safetensors and deltaedit.json)", req.pack.string());
  if (fs::exists(req.out))
    throw Error(ErrorKind::Usage, "output already exists; choose a new --out or remove it first", req.out.string());
  // Everything read from deltaedit.json names that file when it is malformed (Format, exit 1).
  const fs::path meta_path = req.pack / "deltaedit.json";
  const std::string meta_label = meta_path.string();
  json meta = io::parse_json_strict(util::read_file(meta_path), meta_label);
  if (!meta.contains("pack") || !meta["pack"].is_object() || meta["pack"].value("format", "") != pack::kPackFormat)
    throw Error(ErrorKind::Format, std::string("not a ") + pack::kPackFormat + " pack", meta_label);
  const json& pm = meta["pack"];
  struct TensorMeta {
    std::string encoding;
    json params;
  };
  OutLayout layout;
  std::map<std::string, TensorMeta> tmeta;
  std::map<std::string, std::string> md;
  std::string checkpoint_meta;
  auto packf = io::SafetensorsFile::open(req.pack / pack::kPackFile);
  util::at_boundary(meta_label, "", [&] {
    layout = OutLayout::from_json(pm.at("layout"), meta_label);
    for (const auto& t : pm.at("tensors")) {
      const std::string name = t.at("name").get<std::string>();
      util::at_boundary(meta_label, name, [&] {
        TensorMeta m{t.at("encoding").get<std::string>(), t.value("params", json::object())};
        for (const auto& part : t.at("parts"))
          if (!packf.header().find(name + "::" + part.get<std::string>()))
            throw Error(ErrorKind::Format, "pack lacks part '" + part.get<std::string>() + "'", packf.path().string(),
                        name);
        tmeta[name] = std::move(m);
      });
    }
    md = pm.at("shard_metadata").get<std::map<std::string, std::string>>();
    checkpoint_meta = pm.at("checkpoint_meta").dump(2) + "\n";
  });
  auto base = io::Checkpoint::open(req.base);
  // Check the base matches before writing anything.
  for (const auto& t : layout.tensors) {
    auto it = tmeta.find(t.name);
    if (it == tmeta.end()) throw Error(ErrorKind::Format, "pack lacks this tensor", meta_label, t.name);
    const std::string& enc = it->second.encoding;
    if (enc == "raw" || enc == "out") continue;
    if (!base.contains(t.name))
      throw Error(ErrorKind::Usage, "base lacks a tensor the pack edits: is this the right base?", req.base.string(), t.name);
    const auto& bi = base.info(t.name);
    if (bi.shape != t.shape || !io::is_compute_dtype(bi.dtype))
      throw Error(ErrorKind::Usage, "base tensor has a different shape or dtype than the pack expects", req.base.string(),
                  t.name);
  }
  uint64_t out_bytes = 0;
  for (const auto& t : layout.tensors) out_bytes += t.nbytes();
  std::vector<fs::path> inputs = base.input_paths();
  inputs.push_back(req.pack);
  io::Staging staging(req.out, inputs, out_bytes);
  ShardWriters writers(staging, layout, md);
  EditResult result;
  result.tensors.resize(layout.tensors.size());
  std::atomic<size_t> done{0};
  std::atomic<uint64_t> bytes_done{0};
  std::mutex mu;
  MemoryBudget budget(req.max_memory);
  parallel_for(layout.tensors.size(), std::max(1u, req.threads), [&](size_t i) {
    const OutTensor& ot = layout.tensors[i];
    const TensorMeta& tm = tmeta.at(ot.name);
    const std::string& enc = tm.encoding;
    auto get = [&](const std::string& suffix) { return packf.data(ot.name + "::" + suffix); };
    const uint64_t numel = util::checked_numel(ot.shape, meta_label, ot.name);
    auto& w = writers.of(ot.name);
    TensorOutcome& out = result.tensors[i];
    out.name = ot.name;
    out.numel = numel;
    out.encoding = enc;
    if (enc == "raw" || enc == "out") {
      auto b = get(enc);
      if (b.size() != ot.nbytes()) throw Error(ErrorKind::Format, "pack part has the wrong size", packf.path().string(), ot.name);
      w.write(ot.name, b);
      out.action = enc == "raw" ? "copied" : "edited";
    } else {
      MemoryBudget::Hold hold(budget, numel * 4);
      std::vector<float> edited(numel);
      util::at_boundary(req.pack.string(), ot.name, [&] { pack::decode(enc, tm.params, get, edited, {}); });
      const auto& bi = base.info(ot.name);
      const uint64_t bsz = io::dtype_bits(bi.dtype) / 8;
      out.nonfinite_out = compose_output(
          base.data(ot.name), bi.dtype, {}, bi.dtype, edited.size(), from_buffer(edited), ot.dtype, nullptr,
          [&](std::span<const std::byte> b, uint64_t off) { w.write(ot.name, b, off); },
          [&](uint64_t off, uint64_t m) { base.release_range(ot.name, off * bsz, m * bsz); });
      base.release(ot.name);
      out.action = "edited";
    }
    bytes_done += ot.nbytes();
    size_t d = ++done;
    if (progress) {
      std::lock_guard<std::mutex> g(mu);
      progress(d, layout.tensors.size(), bytes_done.load());
    }
  });
  writers.finish();
  for (const auto& e : fs::directory_iterator(req.pack)) {
    const std::string n = e.path().filename().string();
    if (!e.is_regular_file() || n == pack::kPackFile || n == "deltaedit.json") continue;
    staging.copy_in(e.path(), n);
  }
  staging.write_text("deltaedit.json", checkpoint_meta);
  if (layout.sharded) staging.write_text(io::kIndexName, index_json(layout));
  validate_output(staging.materialize(), layout);
  staging.commit_dir();
  result.output_bytes = out_bytes;
  result.plan = {{"output", req.out.string()}, {"output_files", layout.files}, {"tensors", layout.tensors.size()}};
  return result;
}

}  // namespace deltaedit::engine
