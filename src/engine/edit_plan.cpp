#include "engine/edit_plan.h"

#include <fmt/format.h>

#include <sys/statvfs.h>

#include <algorithm>

#include "io/pairing.h"
#include "io/peft.h"
#include "util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace deltaedit::engine {

using io::pair_tensors;
using io::PairStatus;

std::map<std::string, std::string> shard_metadata(const json& provenance) {
  return {{"deltaedit.version", provenance.value("version", "")},
          {"deltaedit.seed", std::to_string(provenance.value("seed", uint64_t(0)))},
          {"deltaedit.ops", provenance.value("ops", json::array()).dump()}};
}

namespace {

uint64_t free_bytes(const fs::path& target) {
  fs::path p = target.empty() ? fs::current_path() : fs::absolute(target).parent_path();  // dry run without --out
  while (!p.empty() && !fs::exists(p)) p = p.parent_path();
  struct statvfs v {};
  if (p.empty() || ::statvfs(p.c_str(), &v) != 0) return 0;
  return uint64_t(v.f_bavail) * uint64_t(v.f_frsize);
}

json scope_json(const OpChain& chain, const io::TensorSource& post,
                const std::vector<std::string>& editable) {
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

EditPlan plan_edit(const EditRequest& req) {
  EditPlan P;
  // 1. Everything that can be checked without reading weights.
  P.chain = OpChain::build(req.ops, req.seed, req.include, req.exclude);
  const OpChain& chain = P.chain;
  if (chain.needs_grad() && !req.grad)
    throw Error(
        ErrorKind::Usage,
        "an op needs gradients (by=grad): pass --grad G.safetensors (see `deltaedit grad`)");
  if (req.dtype && !io::is_compute_dtype(*req.dtype))
    throw Error(ErrorKind::Usage, "--dtype must be one of F32, BF16, F16, F64");
  if (!req.dry_run && fs::exists(req.out))
    throw Error(ErrorKind::Usage, "output already exists; choose a new --out or remove it first",
                req.out.string());

  // 2. Open and pair the inputs; plan every tensor.
  P.base = std::make_unique<io::Checkpoint>(io::Checkpoint::open(req.base));
  const io::Checkpoint& base = *P.base;
  P.post = io::open_post(req.post, base);
  const io::TensorSource& post = *P.post;
  if (req.grad) P.grad = io::SafetensorsFile::open(*req.grad);
  auto& grad = P.grad;
  auto pairs = pair_tensors(base, post);
  std::vector<std::string> order, editable;
  std::map<std::string, bool> edit_it;
  json& skipped = P.skipped;
  json resized = json::array();
  std::map<std::string, uint64_t> resized_numel;
  for (const auto& p : pairs) {
    if (p.status == PairStatus::OnlyBase) {
      skipped.push_back({{"name", p.name}, {"status", to_string(p.status)}, {"note", p.note}});
      continue;
    }
    order.push_back(p.name);
    // A resized vocabulary (post has rows added) is edited on the rows it shares with base; a
    // pack stores it whole.
    const bool shared_rows = p.status == PairStatus::Resized && !req.pack;
    const auto& shape = shared_rows ? base.info(p.name).shape : post.info(p.name).shape;
    bool e = (p.status == PairStatus::Editable || shared_rows) && chain.touches_any(p.name, shape);
    edit_it[p.name] = e;
    if (p.status == PairStatus::Editable) editable.push_back(p.name);
    if (shared_rows) {
      if (e) resized_numel[p.name] = base.info(p.name).numel();
      resized.push_back({{"name", p.name},
                         {"status", to_string(p.status)},
                         {"shared_rows", p.shared_rows},
                         {"post_rows", p.post_rows},
                         {"note", e ? fmt::format("the {} rows shared with base edited; post's {} added rows "
                                                  "copied unchanged",
                                                  p.shared_rows, p.post_rows - p.shared_rows)
                                    : std::string("not touched by the ops; copied from post unchanged")}});
    } else if (p.status != PairStatus::Editable) {
      skipped.push_back({{"name", p.name},
                         {"status", to_string(p.status)},
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
        if (!gi)
          throw Error(
              ErrorKind::Usage,
              "op '" + chain.specs[i].text + "' needs this tensor's gradient but the file lacks it",
              grad->path().string(), n);
        if (gi->shape != ti.shape || !io::is_compute_dtype(gi->dtype))
          throw Error(ErrorKind::Usage, "gradient has a different shape or a non-float dtype",
                      grad->path().string(), n);
      }
    }
  }
  auto dtype_of = [&](const std::string& n) {
    io::DType d = post.info(n).dtype;
    return req.dtype && io::is_compute_dtype(d) ? *req.dtype : d;
  };
  P.layout = plan_layout_like(post, order, dtype_of, req.max_shard_size);
  const OutLayout& layout = P.layout;
  uint64_t out_bytes = 0, edited_params = 0, edited_count = 0, streamed_count = 0;
  for (const auto& t : layout.tensors) {
    out_bytes += t.nbytes();
    if (edit_it.at(t.name)) {
      edited_params += resized_numel.count(t.name) ? resized_numel.at(t.name) : post.info(t.name).numel();
      ++edited_count;
    }
  }
  // Whether a tensor goes through the streaming path: a full checkpoint, and every op that
  // touches it pointwise or two-pass.
  const auto streams = [&](const std::string& name) {
    if (req.pack || !req.stream_pointwise || resized_numel.count(name)) return false;
    const auto& shape = post.info(name).shape;
    for (size_t k = 0; k < chain.ops.size(); ++k)
      if (chain.touches(k, name, shape) && !chain.ops[k]->pointwise() && !chain.ops[k]->observes())
        return false;
    return true;
  };
  // Buffer bytes one tensor holds while in flight. Edited: Δ' in f32, the largest op workspace,
  // the gradient (f32) when an op needs it, and for a pack the composed output plus its encoding
  // (at most a copy of Δ'); nothing when it streams. Copied into a pack: the bytes and their copy
  // in the encoding. Copied into a checkpoint: nothing (written from the mapped input).
  auto& tplan = P.tensors;
  tplan.resize(layout.tensors.size());
  uint64_t largest_need = 0, sum_largest = 0;
  {
    std::vector<uint64_t> needs;
    for (size_t i = 0; i < layout.tensors.size(); ++i) {
      const OutTensor& t = layout.tensors[i];
      const auto& ti = post.info(t.name);
      const uint64_t n = ti.numel();
      uint64_t b = 0, ws = 0;
      bool grad_needed = false;
      if (edit_it.at(t.name)) {
        for (size_t k = 0; k < chain.ops.size(); ++k) {
          if (!chain.touches(k, t.name, ti.shape)) continue;
          ws = std::max(ws, chain.ops[k]->workspace_bytes(ti.shape));
          grad_needed |= chain.ops[k]->needs_grad();
        }
      }
      if (!edit_it.at(t.name)) {
        b = (req.pack ? 2 * t.nbytes() : 0) + post.formed_bytes(t.name);
      } else if (streams(t.name)) {
        tplan[i].streamed = true;
        ++streamed_count;
        b = ws + post.formed_bytes(t.name);  // an op's per-tensor state; a tensor an adapter forms
      } else {
        b = n * 4 + ws + (grad_needed ? n * 4 : 0) + (req.pack ? t.nbytes() + n * 4 : 0);
      }
      tplan[i].need = b;
      needs.push_back(b);
    }
    std::sort(needs.rbegin(), needs.rend());
    if (!needs.empty()) largest_need = needs[0];
    for (size_t k = 0; k < needs.size() && k < std::max(1u, req.threads); ++k)
      sum_largest += needs[k];
  }
  const unsigned workers = std::max(1u, req.threads);
  // Held buffers are bounded by the budget (or the largest tensor, which runs alone); each worker
  // adds its streaming chunk buffers and the mapped pages of the chunk it is reading (≤ 32 MB),
  // and the process its code and small state (~32 MB).
  const uint64_t mem = std::min(sum_largest, std::max(req.max_memory, largest_need)) +
                       uint64_t(workers) * (32u << 20) + (32u << 20);
  const uint64_t avail = free_bytes(req.out);

  P.provenance = json{{"tool", "deltaedit"},
                      {"version", kVersion},
                      {"base", req.base.string()},
                      {"post", req.post.string()},
                      {"seed", req.seed},
                      {"ops", chain.describe()},
                      {"op_specs", json::array()},
                      {"include", req.include},
                      {"exclude", req.exclude},
                      {"dtype", req.dtype ? json(io::dtype_name(*req.dtype)) : json(nullptr)}};
  for (const auto& s : chain.specs) P.provenance["op_specs"].push_back(s.text);

  P.report = {{"tensors", order.size()},
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
              {"time_estimate_s",
               double(base.total_bytes() + post.total_bytes() + out_bytes) / (500e6 * workers)},
              {"warnings", post.warnings()}};
  for (size_t i = 0; i < chain.ops.size(); ++i)
    if (P.report["scope"][i]["tensors"].get<uint64_t>() == 0)
      P.report["warnings"].push_back("op '" + chain.specs[i].text + "' matches no tensor");
  for (size_t i = 0; i < layout.tensors.size(); ++i) {
    tplan[i].edited = edit_it.at(layout.tensors[i].name);
    if (resized_numel.count(layout.tensors[i].name)) tplan[i].shared = resized_numel.at(layout.tensors[i].name);
  }
  P.out_bytes = out_bytes;
  P.workers = workers;
  return P;
}

}  // namespace deltaedit::engine
