#include "model/streamed.h"

#include <fmt/format.h>
#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "io/convert.h"
#include "io/writer.h"
#include "util/error.h"

namespace deltaedit::model {
namespace {

constexpr const char* kEmbed = "model.embed_tokens.weight";
constexpr const char* kNorm = "model.norm.weight";
constexpr const char* kHead = "lm_head.weight";

// Elementwise finishing of a gradient is done in row slabs of at most this many elements, so a
// vocabulary-sized tensor never exists in f64 at once (elementwise: the same values either way).
constexpr int64_t kSlab = int64_t(1) << 22;
// A head larger than this (f32 bytes) is formed and differentiated in row slabs of kHeadSlabBytes.
constexpr uint64_t kHeadSliceAbove = 512'000'000;
constexpr int64_t kHeadSlabBytes = 64'000'000;

int64_t numel_of(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// f(first_row, rows) over row slabs of a tensor of `shape`.
template <class F>
void for_each_slab(const std::vector<int64_t>& shape, F&& f) {
  const int64_t rows = shape.empty() ? 1 : shape[0];
  const int64_t per_row = rows ? numel_of(shape) / std::max<int64_t>(rows, 1) : 0;
  const int64_t step = std::max<int64_t>(1, kSlab / std::max<int64_t>(per_row, 1));
  for (int64_t r = 0; r < rows; r += step) f(r, std::min(step, rows - r));
}

// Σ over batches of one tensor's gradient (in the parameter's dtype, as autograd made it), in
// f64 as accumulate_gradients does; one batch is kept as is until a second arrives.
struct Accum {
  torch::Tensor single, sum, fisher_single, fisher;
  int64_t single_count = 0;
  size_t n = 0;
  void add(torch::Tensor g, const std::vector<int64_t>& shape, const torch::TensorOptions& opt,
           int64_t count, bool want_fisher) {
    if (!g.defined()) g = torch::zeros(shape, opt);
    ++n;
    if (n == 1) {
      single = g;
      single_count = count;
      return;
    }
    if (n == 2) {
      sum = single.to(torch::kFloat64).clone();
      if (want_fisher) fisher = (sum / double(single_count)).square();
      single = torch::Tensor();
    }
    auto g64 = g.to(torch::kFloat64);
    sum.add_(g64);
    if (want_fisher) fisher.add_((g64 / double(count)).square());
  }
  // ∇ of the global mean (f32, CPU) and, when asked, the diagonal Fisher over `batches`.
  std::pair<torch::Tensor, torch::Tensor> finish(const std::vector<int64_t>& shape, int64_t count,
                                                 size_t batches, bool want_fisher) {
    auto cpu = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor g32, f32;
    if (n == 0 || count == 0) {
      g32 = torch::zeros(shape, cpu);
      if (want_fisher) f32 = torch::zeros(shape, cpu);
      return {g32, f32};
    }
    if (n >= 2) {
      g32 = (sum / double(count)).to(torch::kCPU, torch::kFloat32).contiguous();
      if (want_fisher)
        f32 = (fisher / double(batches)).to(torch::kCPU, torch::kFloat32).contiguous();
      sum = fisher = torch::Tensor();
      return {g32, f32};
    }
    g32 = torch::empty(shape, cpu);
    if (want_fisher) f32 = torch::empty(shape, cpu);
    for_each_slab(shape, [&](int64_t r, int64_t k) {
      auto g64 = single.narrow(0, r, k).to(torch::kFloat64);
      g32.narrow(0, r, k).copy_((g64 / double(count)).to(torch::kCPU, torch::kFloat32));
      if (want_fisher)
        f32.narrow(0, r, k).copy_(((g64 / double(single_count)).square() / double(batches))
                                      .to(torch::kCPU, torch::kFloat32));
    });
    single = torch::Tensor();
    return {g32, f32};
  }
};

// Σ g·d in f64, in element order, continuing from `s` (so row slabs in order give the whole sum).
double dot_f64(const torch::Tensor& g, const torch::Tensor& d, double s) {
  const float* pg = g.data_ptr<float>();
  const float* pd = d.data_ptr<float>();
  for (int64_t i = 0, n = g.numel(); i < n; ++i) s += double(pg[i]) * double(pd[i]);
  return s;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Every sequence batch of a set: CausalLM's batches, or DPO's chosen batches then rejected ones.
std::vector<const Batch*> sequence_batches(const EvalSet& set) {
  std::vector<const Batch*> v;
  if (set.kind == LossKind::DPO) {
    for (const auto& b : set.chosen) v.push_back(&b);
    for (const auto& b : set.rejected) v.push_back(&b);
  } else {
    for (const auto& b : set.batches) v.push_back(&b);
  }
  return v;
}

struct PreparedBatch {
  const Batch* batch = nullptr;
  torch::Tensor ids;
  PassTables tables;
};

}  // namespace

// The increments of one run: formed per tensor when a unit is reached, with ‖D‖² and ‖Δ‖²
// recorded the first time.
struct StreamedModel::EditState {
  const StreamedEdit* edit = nullptr;
  std::set<std::string> edited;  // edited tensors the model uses
  std::map<std::string, double> delta_sumsq, d_sumsq;
  uint64_t formed = 0;
  torch::Tensor increment(const std::string& name, const std::vector<int64_t>& shape) {
    if (!edited.count(name)) return {};
    double dss = 0;
    auto d = edit->increment(name, dss);
    if (d.scalar_type() != torch::kFloat32 || d.numel() != numel_of(shape) || !d.is_contiguous())
      throw Error(ErrorKind::Internal, "an increment does not match its tensor", "", name);
    d = d.view(shape);
    ++formed;
    if (!delta_sumsq.count(name)) {
      delta_sumsq[name] = dss;
      const float* p = d.data_ptr<float>();
      double s = 0;
      for (int64_t i = 0; i < d.numel(); ++i) s += double(p[i]) * double(p[i]);
      d_sumsq[name] = s;
    }
    return d;
  }
};

torch::Tensor owning_tensor(util::BigFloatBuffer&& buffer) {
  auto* owned = new util::BigFloatBuffer(std::move(buffer));
  return torch::from_blob(
      owned->data(), {int64_t(owned->size())}, [owned](void*) { delete owned; }, torch::kFloat32);
}

nlohmann::json StreamedPlan::to_json() const {
  return {{"units", units},
          {"streams", streams},
          {"gradient_streams", gradient_streams},
          {"tokens", tokens},
          {"unit_bytes", unit_bytes},
          {"weight_bytes", weight_bytes},
          {"activation_bytes", activation_bytes},
          {"peak_bytes", peak_bytes},
          {"in_memory_bytes", in_memory_bytes},
          {"increments_formed", increments_formed}};
}

StreamedModel::StreamedModel(const io::TensorSource& post, const LoadOptions& options)
    : post_(post), options_(options) {
  if (options.dtype != torch::kFloat32 && options.dtype != torch::kBFloat16)
    throw Error(ErrorKind::Unsupported, "model dtype must be float32 or bfloat16");
  if (!post.config())
    throw Error(ErrorKind::Format, "checkpoint has no config.json; the model runtime needs one",
                post.path().string());
  config_ = *post.config();
  arch_ = resolve_arch(config_);
  const ArchSpec& a = arch_;
  const int64_t h = a.hidden, qd = a.heads * a.head_dim, kvd = a.kv_heads * a.head_dim,
                f = a.intermediate;
  auto add = [&](const std::string& n, std::vector<int64_t> s) {
    names_.push_back(n);
    shapes_[n] = std::move(s);
  };
  add(kEmbed, {a.vocab, h});
  for (int64_t l = 0; l < a.layers; ++l) {
    for (const auto& [n, m] : layer_weight_names(a, l)) {
      std::vector<int64_t> s;
      const auto ends = [&](const char* suf) {
        return n.size() >= std::strlen(suf) &&
               n.compare(n.size() - std::strlen(suf), std::string::npos, suf) == 0;
      };
      if (ends("layernorm.weight"))
        s = {h};
      else if (ends("q_proj.weight"))
        s = {qd, h};
      else if (ends("q_proj.bias"))
        s = {qd};
      else if (ends("k_proj.weight") || ends("v_proj.weight"))
        s = {kvd, h};
      else if (ends("k_proj.bias") || ends("v_proj.bias"))
        s = {kvd};
      else if (ends("o_proj.weight"))
        s = {h, qd};
      else if (ends("o_proj.bias") || ends("down_proj.bias"))
        s = {h};
      else if (ends("q_norm.weight") || ends("k_norm.weight"))
        s = {a.head_dim};
      else if (ends("gate_proj.weight") || ends("up_proj.weight"))
        s = {f, h};
      else if (ends("gate_proj.bias") || ends("up_proj.bias"))
        s = {f};
      else if (ends("down_proj.weight"))
        s = {h, f};
      add(n, std::move(s));
    }
  }
  add(kNorm, {h});
  if (!a.tied) add(kHead, {a.vocab, h});
  // The same checks as Model::load, from the headers only.
  const std::set<std::string> known(names_.begin(), names_.end());
  for (const auto& n : post.names()) {
    if (known.count(n)) continue;
    if (n.find("rotary_emb.inv_freq") != std::string::npos) continue;
    if (n == kHead && a.tied) {
      warnings_.push_back(
          "lm_head.weight is ignored: the config ties the head to model.embed_tokens.weight");
      continue;
    }
    throw Error(ErrorKind::Unsupported,
                fmt::format("tensor is not part of the {} architecture as configured",
                            family_name(a.family)),
                post.path().string(), n);
  }
  for (const auto& n : names_) {
    if (!post.contains(n))
      throw Error(ErrorKind::Format, "tensor missing from the checkpoint", post.path().string(), n);
    const auto& info = post.info(n);
    if (!io::is_compute_dtype(info.dtype))
      throw Error(ErrorKind::Unsupported,
                  "dtype " + std::string(io::dtype_name(info.dtype)) +
                      " is not loadable (F16, BF16, F32, F64 are)",
                  post.path().string(), n);
    if (info.shape != shapes_[n])
      throw Error(ErrorKind::Format,
                  "shape " + shape_str(info.shape) + " does not match the config's " +
                      shape_str(shapes_[n]),
                  post.path().string(), n);
  }
  inv_freq_ = rope_inv_freq(a.rope, a.head_dim).to(options.device);
}

const std::vector<int64_t>& StreamedModel::shape(const std::string& name) const {
  auto it = shapes_.find(name);
  if (it == shapes_.end())
    throw Error(ErrorKind::Usage, "the model has no such parameter", {}, name);
  return it->second;
}

torch::Tensor StreamedModel::load(const std::string& n) const {
  const auto& info = post_.info(n);
  auto t = torch::empty(shapes_.at(n), torch::kFloat32);
  io::to_f32(post_.data(n), info.dtype, std::span<float>(t.data_ptr<float>(), size_t(t.numel())));
  post_.release(n);
  return t.to(options_.device, options_.dtype);
}

torch::Tensor StreamedModel::load_rows(const std::string& n, int64_t row, int64_t rows) const {
  const auto& info = post_.info(n);
  const auto& shape = shapes_.at(n);
  const int64_t per_row = numel_of(shape) / shape[0];
  const uint64_t esz = io::dtype_bits(info.dtype) / 8, off = uint64_t(row * per_row) * esz,
                 bytes = uint64_t(rows * per_row) * esz;
  auto t = torch::empty({rows, per_row}, torch::kFloat32);
  io::to_f32(post_.data(n).subspan(off, bytes), info.dtype,
             std::span<float>(t.data_ptr<float>(), size_t(t.numel())));
  post_.release_range(n, off, bytes);
  return t.to(options_.device, options_.dtype);
}

torch::Tensor StreamedModel::load_rows(const std::string& n,
                                       const std::vector<int64_t>& rows) const {
  const auto& info = post_.info(n);
  const auto& shape = shapes_.at(n);
  const int64_t per_row = numel_of(shape) / shape[0];
  const uint64_t esz = io::dtype_bits(info.dtype) / 8;
  auto t = torch::empty({int64_t(rows.size()), per_row}, torch::kFloat32);
  const auto data = post_.data(n);
  for (size_t i = 0; i < rows.size(); ++i)
    io::to_f32(data.subspan(uint64_t(rows[i] * per_row) * esz, uint64_t(per_row) * esz), info.dtype,
               std::span<float>(t.data_ptr<float>() + int64_t(i) * per_row, size_t(per_row)));
  post_.release(n);
  return t.to(options_.device, options_.dtype);
}

int64_t StreamedModel::head_slab() const {
  if (arch_.tied) return 0;  // the tied head is the embedding, whose gradient is assembled whole
  const auto& s = shapes_.at(kHead);
  int64_t rows = head_slab_rows_;
  if (rows == 0 && uint64_t(s[0] * s[1]) * 4 > kHeadSliceAbove)
    rows = std::max<int64_t>(1, kHeadSlabBytes / (4 * s[1]));
  return rows > 0 && rows < s[0] ? rows : 0;
}

void StreamedModel::walk(const EvalSet& set, std::vector<Stream>& streams, EditState* edit,
                         bool all_grads, const Reduce& reduce) {
  const ArchSpec& a = arch_;
  const auto dev = options_.device;
  const auto dtype = options_.dtype;
  const auto popt = torch::TensorOptions().dtype(dtype).device(dev);
  const int64_t L = a.layers;
  const size_t S = streams.size();
  const bool dpo = set.kind == LossKind::DPO;

  // The sequence batches walked (CausalLM: the set's batches; DPO: the chosen batches, then the
  // rejected ones) and the loss units over them: a CausalLM batch alone, or a DPO pair (chosen i,
  // rejected i), whose loss and gradient are one batch's as dataset_gradients counts them.
  const auto seqs = sequence_batches(set);
  std::vector<std::vector<size_t>> units;
  if (dpo) {
    if (set.chosen.size() != set.rejected.size() || set.ref_chosen.size() != set.chosen.size() ||
        set.ref_rejected.size() != set.chosen.size())
      throw Error(ErrorKind::Internal,
                  "a DPO set's chosen, rejected and reference batches differ in number");
    for (size_t i = 0; i < set.chosen.size(); ++i) units.push_back({i, set.chosen.size() + i});
  } else {
    for (size_t b = 0; b < seqs.size(); ++b) units.push_back({b});
  }
  const size_t NU = units.size();
  // The loss of unit u from its members' logits (in member order).
  const auto unit_loss = [&](size_t u, const std::vector<torch::Tensor>& logits) -> TokenLoss {
    if (!dpo) return causal_lm_loss_sum(logits[0], *seqs[units[u][0]]);
    auto lc = sequence_logprob(logits[0], set.chosen[u]);
    auto lr = sequence_logprob(logits[1], set.rejected[u]);
    auto l = dpo_losses(lc, lr, set.ref_chosen[u].to(lc.device()),
                        set.ref_rejected[u].to(lc.device()), set.beta);
    return {l.to(torch::kFloat64).sum(), l.size(0)};
  };

  // Batches: ids on the device, positions and masks as Model::forward makes them.
  std::vector<PreparedBatch> bs;
  for (const Batch* bp : seqs) {
    const Batch& b = *bp;
    PreparedBatch p;
    p.batch = &b;
    const auto& ids = b.input_ids;
    if (!ids.defined() || ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1)
      throw Error(ErrorKind::Usage, "input_ids must be a non-empty [batch, length] tensor");
    p.ids = ids.to(dev, torch::kLong);
    const int64_t lo = p.ids.min().item<int64_t>(), hi = p.ids.max().item<int64_t>();
    if (lo < 0 || hi >= a.vocab)
      throw Error(ErrorKind::Usage, fmt::format("token id {} is outside the vocabulary [0, {})",
                                                lo < 0 ? lo : hi, a.vocab));
    const int64_t B = p.ids.size(0), T = p.ids.size(1);
    if (b.attention_mask.defined()) {
      auto valid = b.attention_mask.to(dev) != 0;
      p.tables = pass_tables(inv_freq_, batch_positions(valid), valid, B, T, 0, dev);
    } else {
      auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(dev))
                     .unsqueeze(0)
                     .expand({B, T});
      p.tables = pass_tables(inv_freq_, pos, {}, B, T, 0, dev);
    }
    bs.push_back(std::move(p));
  }
  const size_t NB = bs.size();

  bool any_grad = false;
  for (const auto& st : streams) any_grad = any_grad || st.grad;
  const size_t total_units = size_t(L + 2) + (any_grad ? size_t(L + 1) : 0);
  size_t units_done = 0;
  const auto progressed = [&](const char* what) {
    ++units_done;
    if (progress_) progress_(what, units_done, total_units);
  };

  const auto needs_grad = [&](const std::string& n) {
    return all_grads || (edit && edit->edited.count(n));
  };
  const auto increment = [&](const std::string& n) {
    return edit ? edit->increment(n, shapes_.at(n)) : torch::Tensor();
  };
  // W_post + t·D in the compute dtype, as Model::add_ forms it.
  const auto form = [&](const std::string& n, double t, const torch::Tensor& d) {
    auto w = load(n);
    if (t == 0.0 || !d.defined()) return w;
    if (w.scalar_type() == torch::kFloat32)
      w.add_(d.to(dev, torch::kFloat32), t);
    else
      w = w.to(torch::kFloat32).add_(d.to(dev, torch::kFloat32), t).to(dtype);
    return w;
  };
  const auto finish = [&](size_t s, const std::string& n, Accum& acc, const torch::Tensor& d) {
    auto [g, f] =
        acc.finish(shapes_.at(n), streams[s].count, streams[s].batches, streams[s].fisher);
    reduce(s, n, 0, g, f, d);
  };
  // W_post + t·D of some rows (a slab, or the embedding's looked-up rows).
  const auto with_increment = [&](torch::Tensor w, double t, const torch::Tensor& d) {
    if (t == 0.0 || !d.defined()) return w;
    if (w.scalar_type() == torch::kFloat32) {
      w.add_(d.to(dev, torch::kFloat32), t);
      return w;
    }
    return w.to(torch::kFloat32).add_(d.to(dev, torch::kFloat32), t).to(dtype);
  };

  // acts[u][s][b]: input of unit u (1..L+1) for stream s, sequence batch b; gx[s][b]: ∂L/∂(that
  // input) while walking back; active[s][u]: loss unit u has scored tokens (as
  // accumulate_gradients skips the others); counts[u]: its count (tokens, or DPO records).
  std::vector<std::vector<std::vector<torch::Tensor>>> acts(
      size_t(L + 2), std::vector<std::vector<torch::Tensor>>(S));
  std::vector<std::vector<torch::Tensor>> gx(S, std::vector<torch::Tensor>(NB));
  std::vector<std::vector<torch::Tensor>> pending(
      S, std::vector<torch::Tensor>(NU));  // tied head's ∇embed, per loss unit
  std::vector<std::vector<char>> active(S, std::vector<char>(NU, 0));
  std::vector<int64_t> counts(NU, 0);

  // The embedding rows the data looks up (ascending), and each batch's ids as indices into them:
  // a lookup needs only those rows of W_post + t·D, and its gradient is zero elsewhere.
  std::vector<int64_t> rows;
  std::vector<torch::Tensor> local_ids;
  {
    std::set<int64_t> seen;
    for (const auto& b : bs) {
      auto c = b.ids.to(torch::kCPU).contiguous();
      const int64_t* p = c.data_ptr<int64_t>();
      seen.insert(p, p + c.numel());
    }
    rows.assign(seen.begin(), seen.end());
    auto rt = torch::tensor(rows, torch::kLong).to(dev);
    for (const auto& b : bs) local_ids.push_back(torch::searchsorted(rt, b.ids));
  }
  const auto row_index = torch::tensor(rows, torch::kLong);
  // The backward of the lookup over its rows only (not for a tied embedding, whose gradient has
  // the head's part everywhere, nor when the whole gradient is asked for).
  const bool embed_rows_back = !a.tied && !all_grads;

  {  // Forward: the embedding and every decoder layer.
    torch::NoGradGuard ng;
    {
      auto d = increment(kEmbed);
      auto d_rows = d.defined() ? d.index_select(0, row_index) : torch::Tensor();
      d = torch::Tensor();
      auto p_rows = load_rows(kEmbed, rows);
      for (size_t s = 0; s < S; ++s) {
        auto w = with_increment(p_rows.clone(), streams[s].t, d_rows);
        for (size_t b = 0; b < NB; ++b) acts[1][s].push_back(torch::embedding(w, local_ids[b]));
      }
    }
    progressed("forward");
    for (int64_t l = 0; l < L; ++l) {
      io::check_interrupted();
      const auto wn = layer_weight_names(a, l);
      std::map<std::string, torch::Tensor> D;
      for (const auto& [n, m] : wn) D[n] = increment(n);
      for (size_t s = 0; s < S; ++s) {
        LayerWeights w;
        for (const auto& [n, m] : wn) w.*m = form(n, streams[s].t, D[n]);
        for (size_t b = 0; b < NB; ++b)
          acts[size_t(l + 2)][s].push_back(
              decoder_layer(a, w, acts[size_t(l + 1)][s][b], bs[b].tables, size_t(l), dtype));
        if (!streams[s].grad) acts[size_t(l + 1)][s].clear();
      }
      progressed("forward");
    }
  }

  {  // The head: losses, and for gradient streams its backward at once.
    const std::string head = a.tied ? kEmbed : kHead;
    const int64_t slab = head_slab();
    const int64_t V = shapes_.at(head)[0];
    auto d_norm = increment(kNorm), d_head = increment(head);
    // The head's rows [r, r + k) at stream s.
    const auto head_rows = [&](size_t s, int64_t r, int64_t k) {
      return with_increment(load_rows(head, r, k), streams[s].t,
                            d_head.defined() ? d_head.narrow(0, r, k) : torch::Tensor());
    };
    const auto loss_of = [&](size_t s, size_t u, TokenLoss tl) {
      if (tl.count < 0) throw Error(ErrorKind::Internal, "a batch reported a negative count");
      if (tl.count == 0) return false;
      const double v = tl.sum.item<double>();
      if (!std::isfinite(v))
        throw Error(ErrorKind::Numeric,
                    "the loss of batch " + std::to_string(u) + " is not finite");
      streams[s].loss_sum += v;
      streams[s].count += tl.count;
      ++streams[s].batches;
      active[s][u] = 1;
      counts[u] = tl.count;
      return true;
    };
    const auto members_of = [&](size_t u, const std::vector<torch::Tensor>& per_batch) {
      std::vector<torch::Tensor> v;
      for (size_t b : units[u]) v.push_back(per_batch[b]);
      return v;
    };
    for (size_t s = 0; s < S; ++s) {
      io::check_interrupted();
      Stream& st = streams[s];
      auto wn = form(kNorm, st.t, d_norm);
      auto& xs = acts[size_t(L + 1)][s];
      if (!st.grad) {
        torch::NoGradGuard ng;
        std::vector<torch::Tensor> logits(NB);
        if (slab == 0) {
          auto wh = form(head, st.t, d_head);
          for (size_t b = 0; b < NB; ++b) logits[b] = output_logits(a, xs[b], wn, wh);
        } else {
          std::vector<torch::Tensor> hn(NB);
          std::vector<std::vector<torch::Tensor>> parts(NB);
          for (size_t b = 0; b < NB; ++b) hn[b] = final_norm(a, xs[b], wn);
          for (int64_t r = 0; r < V; r += slab) {
            auto wk = head_rows(s, r, std::min(slab, V - r));
            for (size_t b = 0; b < NB; ++b) parts[b].push_back(torch::linear(hn[b], wk));
          }
          for (size_t b = 0; b < NB; ++b) logits[b] = torch::cat(parts[b], -1).to(torch::kFloat32);
        }
        if (st.logprobs)
          for (size_t b = 0; b < NB; ++b)
            st.logprobs->push_back(sequence_logprob(logits[b], *seqs[b]).to(torch::kCPU));
        for (size_t u = 0; u < NU; ++u) {
          auto tl = unit_loss(u, members_of(u, logits));
          st.loss_sum += tl.sum.item<double>();
          st.count += tl.count;
          for (size_t b : units[u]) logits[b] = torch::Tensor();
        }
        xs.clear();
        continue;
      }
      torch::AutoGradMode on(true);
      const bool gn = needs_grad(kNorm), gh = needs_grad(head);
      wn.requires_grad_(gn);
      Accum an;
      if (slab == 0) {
        auto wh = form(head, st.t, d_head);
        wh.requires_grad_(gh);
        Accum ah;
        for (size_t u = 0; u < NU; ++u) {
          std::vector<torch::Tensor> x, logits;
          for (size_t b : units[u]) {
            x.push_back(xs[b].detach().requires_grad_(true));
            logits.push_back(output_logits(a, x.back(), wn, wh));
          }
          auto tl = unit_loss(u, logits);
          logits.clear();
          if (!loss_of(s, u, tl)) continue;
          tl.sum.backward();
          if (gn) an.add(wn.grad(), shapes_.at(kNorm), popt, tl.count, st.fisher);
          if (gh) {
            if (a.tied)
              pending[s][u] = wh.grad();
            else
              ah.add(wh.grad(), shapes_.at(head), popt, tl.count, st.fisher);
          }
          wn.mutable_grad() = torch::Tensor();
          wh.mutable_grad() = torch::Tensor();
          for (size_t i = 0; i < units[u].size(); ++i) {
            gx[s][units[u][i]] = x[i].grad();
            xs[units[u][i]] = torch::Tensor();
          }
        }
        wh = torch::Tensor();
        if (gh && !a.tied) finish(s, head, ah, d_head);
      } else {
        // Logits slab by slab without autograd, their gradient from the loss, then each slab's
        // weight gradient and its share of ∂L/∂(normed hidden state).
        std::vector<torch::Tensor> x(NB), hn(NB), hd(NB), gl(NB);
        std::vector<std::vector<torch::Tensor>> parts(NB);
        for (size_t b = 0; b < NB; ++b) {
          x[b] = xs[b].detach().requires_grad_(true);
          xs[b] = torch::Tensor();
          hn[b] = final_norm(a, x[b], wn);
          hd[b] = hn[b].detach().requires_grad_(true);
        }
        {
          torch::NoGradGuard ng;
          for (int64_t r = 0; r < V; r += slab) {
            auto wk = head_rows(s, r, std::min(slab, V - r));
            for (size_t b = 0; b < NB; ++b) parts[b].push_back(torch::linear(hd[b], wk));
          }
        }
        for (size_t u = 0; u < NU; ++u) {
          std::vector<torch::Tensor> logits;
          for (size_t b : units[u]) {
            logits.push_back(torch::cat(parts[b], -1).to(torch::kFloat32).requires_grad_(true));
            parts[b].clear();
          }
          auto tl = unit_loss(u, logits);
          if (!loss_of(s, u, tl)) continue;
          tl.sum.backward();
          for (size_t i = 0; i < units[u].size(); ++i) gl[units[u][i]] = logits[i].grad();
        }
        for (int64_t r = 0; r < V; r += slab) {
          const int64_t k = std::min(slab, V - r);
          auto wk = head_rows(s, r, k).requires_grad_(gh);
          Accum ak;
          for (size_t u = 0; u < NU; ++u) {
            if (!active[s][u]) continue;
            for (size_t b : units[u]) {
              auto out = torch::linear(hd[b], wk).to(torch::kFloat32);
              torch::autograd::backward({out}, {gl[b].narrow(-1, r, k)});
            }
            if (gh) ak.add(wk.grad(), {k, shapes_.at(head)[1]}, popt, counts[u], st.fisher);
            wk.mutable_grad() = torch::Tensor();
          }
          if (gh) {
            auto [g, f] = ak.finish({k, shapes_.at(head)[1]}, st.count, st.batches, st.fisher);
            reduce(s, head, r, g, f, d_head.defined() ? d_head.narrow(0, r, k) : torch::Tensor());
          }
        }
        for (size_t u = 0; u < NU; ++u) {
          if (!active[s][u]) continue;
          for (size_t b : units[u]) torch::autograd::backward({hn[b]}, {hd[b].grad()});
          if (gn) an.add(wn.grad(), shapes_.at(kNorm), popt, counts[u], st.fisher);
          wn.mutable_grad() = torch::Tensor();
          for (size_t b : units[u]) {
            gx[s][b] = x[b].grad();
            gl[b] = hn[b] = hd[b] = x[b] = torch::Tensor();
          }
        }
      }
      xs.clear();
      wn = torch::Tensor();
      if (gn) finish(s, kNorm, an, d_norm);
    }
    progressed("forward");
  }

  // Backward through the decoder layers, last first, then the embedding.
  if (!any_grad) return;
  for (int64_t l = L - 1; l >= 0; --l) {
    io::check_interrupted();
    const auto wn = layer_weight_names(a, l);
    std::map<std::string, torch::Tensor> D;
    for (const auto& [n, m] : wn) D[n] = increment(n);
    for (size_t s = 0; s < S; ++s) {
      if (!streams[s].grad) continue;
      torch::AutoGradMode on(true);
      LayerWeights w;
      for (const auto& [n, m] : wn) {
        w.*m = form(n, streams[s].t, D[n]);
        (w.*m).requires_grad_(needs_grad(n));
      }
      std::map<std::string, Accum> acc;
      auto& xs = acts[size_t(l + 1)][s];
      for (size_t u = 0; u < NU; ++u) {
        if (!active[s][u]) continue;
        // A unit's members add their contributions to the weights' .grad before it is taken.
        for (size_t b : units[u]) {
          auto x = xs[b].detach().requires_grad_(true);
          auto out = decoder_layer(a, w, x, bs[b].tables, size_t(l), dtype);
          torch::autograd::backward({out}, {gx[s][b]});
          gx[s][b] = x.grad();
          xs[b] = torch::Tensor();
        }
        for (const auto& [n, m] : wn) {
          if (!needs_grad(n)) continue;
          acc[n].add((w.*m).grad(), shapes_.at(n), popt, counts[u], streams[s].fisher);
          (w.*m).mutable_grad() = torch::Tensor();
        }
      }
      xs.clear();
      w = LayerWeights();
      for (const auto& [n, m] : wn)
        if (needs_grad(n)) finish(s, n, acc[n], D[n]);
    }
    progressed("backward");
  }
  if (!needs_grad(kEmbed)) {
    progressed("backward");
    return;
  }
  auto d = increment(kEmbed);
  const int64_t H = shapes_.at(kEmbed)[1];
  auto d_rows = embed_rows_back && d.defined() ? d.index_select(0, row_index) : torch::Tensor();
  auto p_rows = embed_rows_back ? load_rows(kEmbed, rows) : torch::Tensor();
  for (size_t s = 0; s < S; ++s) {
    if (!streams[s].grad) continue;
    torch::AutoGradMode on(true);
    auto w = embed_rows_back ? with_increment(p_rows.clone(), streams[s].t, d_rows)
                             : form(kEmbed, streams[s].t, d);
    w.requires_grad_(true);
    Accum acc;
    for (size_t u = 0; u < NU; ++u) {
      if (!active[s][u]) continue;
      for (size_t b : units[u]) {
        auto out = torch::embedding(w, embed_rows_back ? local_ids[b] : bs[b].ids);
        torch::autograd::backward({out}, {gx[s][b]});
        gx[s][b] = torch::Tensor();
      }
      auto g = w.grad();
      // A tied embedding's gradient is the head's and the lookup's, summed once as autograd does.
      if (a.tied && pending[s][u].defined()) g = pending[s][u] + g;
      pending[s][u] = torch::Tensor();
      acc.add(g, {w.size(0), H}, popt, counts[u], streams[s].fisher);
      w.mutable_grad() = torch::Tensor();
    }
    w = torch::Tensor();
    if (!embed_rows_back) {
      finish(s, kEmbed, acc, d);
      continue;
    }
    // Row by row in ascending order: the rows not looked up have a zero gradient.
    auto [g, f] = acc.finish({int64_t(rows.size()), H}, streams[s].count, streams[s].batches,
                             streams[s].fisher);
    for (size_t i = 0; i < rows.size(); ++i) {
      const int64_t r = rows[i], ii = int64_t(i);
      reduce(s, kEmbed, r, g.narrow(0, ii, 1), f.defined() ? f.narrow(0, ii, 1) : torch::Tensor(),
             d.defined() ? d.narrow(0, r, 1) : torch::Tensor());
    }
  }
  progressed("backward");
}

std::vector<torch::Tensor> StreamedModel::sequence_logprobs(const std::vector<Batch>& batches) {
  EvalSet set;
  set.batches = batches;
  std::vector<Stream> st(1);
  std::vector<torch::Tensor> out;
  st[0].logprobs = &out;
  walk(set, st, nullptr, false, {});
  return out;
}

double StreamedModel::loss(const EvalSet& set) {
  std::vector<Stream> st(1);
  walk(set, st, nullptr, false, {});
  return st[0].count > 0 ? st[0].loss_sum / double(st[0].count) : std::nan("");
}

GradientResult StreamedModel::gradients(const EvalSet& set, const GradientSink& sink) {
  std::vector<Stream> st(1);
  st[0].grad = true;
  walk(set, st, nullptr, true,
       [&](size_t, const std::string& n, int64_t row, const torch::Tensor& g, const torch::Tensor&,
           const torch::Tensor&) { sink(n, row, g); });
  GradientResult r;
  r.loss_sum = st[0].loss_sum;
  r.count = st[0].count;
  r.batches = st[0].batches;
  return r;
}

ApproxResult StreamedModel::approximation_term(const EvalSet& set, const StreamedEdit& edit,
                                               int steps, Rule rule, bool fisher) {
  EditState es;
  es.edit = &edit;
  for (const auto& n : edit.names)
    if (shapes_.count(n))
      es.edited.insert(n);  // a tied lm_head: its gradient lives in embed_tokens
  const std::vector<std::string> names(es.edited.begin(),
                                       es.edited.end());  // sorted, as the map in memory
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < names.size(); ++i) index[names[i]] = i;

  // The path points walked together: the nodes, W_post (t = 0) and W_edit (t = 1).
  std::vector<Stream> st;
  const auto stream_at = [&](double t) -> Stream& {
    for (auto& s : st)
      if (s.t == t) return s;
    st.push_back({});
    st.back().t = t;
    return st.back();
  };
  const auto nodes = quadrature_nodes(steps, rule);
  for (const auto& [t, w] : nodes) stream_at(t).grad = true;
  Stream& post = stream_at(0.0);
  if (fisher) post.grad = post.fisher = true;
  stream_at(1.0);
  std::vector<std::vector<double>> dots(st.size(), std::vector<double>(names.size(), 0.0));
  double fisher_sum = 0;
  walk(set, st, &es, false,
       [&](size_t s, const std::string& n, int64_t, const torch::Tensor& g, const torch::Tensor& f,
           const torch::Tensor& d) {
         auto it = index.find(n);
         if (it == index.end() || !d.defined()) return;
         dots[s][it->second] = dot_f64(g.contiguous(), d.contiguous(), dots[s][it->second]);
         if (f.defined()) {
           auto fc = f.contiguous(), dc = d.contiguous();
           const float* pf = fc.data_ptr<float>();
           const float* pd = dc.data_ptr<float>();
           double x = 0;
           for (int64_t i = 0; i < f.numel(); ++i)
             x += double(pf[i]) * double(pd[i]) * double(pd[i]);
           fisher_sum += x;
         }
       });
  ApproxResult r;
  r.steps = steps;
  r.rule = rule;
  double delta_sumsq = 0, d_sumsq = 0;
  for (const auto& n : edit.names)
    delta_sumsq += es.delta_sumsq.count(n) ? es.delta_sumsq[n] : edit.delta_sumsq(n);
  for (const auto& n : names) d_sumsq += es.d_sumsq[n];
  r.intensity = delta_sumsq > 0 ? d_sumsq / delta_sumsq : 0.0;
  auto rs = riemann_sum(steps, rule, names.size(), [&](double t) {
    for (size_t s = 0; s < st.size(); ++s)
      if (st[s].t == t) return dots[s];
    throw Error(ErrorKind::Internal, "a quadrature node was not walked");
  });
  const auto mean = [](const Stream& s) {
    return s.count > 0 ? s.loss_sum / double(s.count) : std::nan("");
  };
  for (const auto& s : st) {
    if (s.t == 0.0) r.loss_post = mean(s);
    if (s.t == 1.0) r.loss_edit = mean(s);
  }
  if (fisher) r.fisher_term = 0.5 * fisher_sum;
  for (size_t i = 0; i < names.size(); ++i) r.per_tensor.emplace_back(names[i], rs.per_tensor[i]);
  r.approximation_term = rs.total;
  r.nodes_t = rs.t;
  r.nodes_value = rs.node_value;
  r.true_delta_loss = r.loss_edit - r.loss_post;
  r.gap = r.true_delta_loss - r.approximation_term;
  return r;
}

StreamedPlan StreamedModel::plan(const EvalSet& set, int64_t points, int64_t gradient_points,
                                 size_t edited) const {
  StreamedPlan p;
  const ArchSpec& a = arch_;
  const uint64_t cd = options_.dtype == torch::kFloat32 ? 4 : 2;
  p.units = a.layers + 2;
  p.streams = points;
  p.gradient_streams = gradient_points;
  int64_t max_bt = 0;
  const auto seqs = sequence_batches(set);
  for (const Batch* b : seqs) {
    p.tokens += b->input_ids.numel();
    max_bt = std::max<int64_t>(max_bt, b->input_ids.numel());
  }
  const bool approx = edited > 0;
  std::vector<std::vector<std::string>> units;
  units.push_back({kEmbed});
  for (int64_t l = 0; l < a.layers; ++l) {
    units.emplace_back();
    for (const auto& [n, m] : layer_weight_names(a, l)) units.back().push_back(n);
  }
  units.push_back({kNorm, a.tied ? kEmbed : kHead});
  const bool many_batches =
      (set.kind == LossKind::DPO ? set.chosen.size() : set.batches.size()) > 1;
  uint64_t params = 0;
  for (const auto& n : names_) params += uint64_t(numel_of(shapes_.at(n)));
  std::set<int64_t> looked_up;
  for (const Batch* b : seqs) {
    auto c = b->input_ids.to(torch::kCPU, torch::kLong).contiguous();
    looked_up.insert(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
  }
  const int64_t slab = head_slab();
  for (size_t u = 0; u < units.size(); ++u) {
    uint64_t n = 0;
    for (const auto& t : units[u]) n += uint64_t(numel_of(shapes_.at(t)));
    p.unit_bytes = std::max(p.unit_bytes, 4 * n);
    // Formed at once: the unit's D (f32; the engine's buffer), then one point's weights, their
    // gradients and f64 sums over several batches (one f64 slab for a single batch). The
    // embedding forms only its looked-up rows, a sliced head one slab.
    uint64_t formed = n;
    if (u == 0 && !(a.tied || (edited == 0 && gradient_points > 0)))
      formed = uint64_t(looked_up.size()) * uint64_t(a.hidden);
    if (u + 1 == units.size() && slab > 0)
      formed = uint64_t(slab) * uint64_t(a.hidden) + uint64_t(a.hidden);
    const uint64_t d = approx ? 4 * n : 0;
    const uint64_t grads =
        gradient_points > 0
            ? cd * formed + (many_batches ? 8 * formed : 8 * std::min<uint64_t>(formed, kSlab))
            : 0;
    p.weight_bytes = std::max(p.weight_bytes, d + cd * formed + grads);
  }
  const uint64_t per_act = uint64_t(p.tokens) * uint64_t(a.hidden) * cd;
  p.activation_bytes = uint64_t(gradient_points) * (uint64_t(a.layers + 1) * per_act + per_act) +
                       uint64_t(points - gradient_points) * 2 * per_act;
  const uint64_t logits = uint64_t(max_bt) * uint64_t(a.vocab) * 4 * 4;
  p.peak_bytes = p.weight_bytes + p.activation_bytes + logits;
  // In memory: the model, its saved state, D (map and tensors), a gradient in the parameter
  // dtype, its f64 sum and the returned f32 copy.
  if (approx)
    p.in_memory_bytes = params * (2 * cd + 8 + cd + 8 + 4);
  else if (gradient_points > 0)
    p.in_memory_bytes = params * (cd + cd + 8 + 4);
  else
    p.in_memory_bytes = params * cd;
  p.in_memory_bytes += logits;
  if (approx) {
    const uint64_t per = gradient_points > 0 ? 2 : 1;
    p.increments_formed = uint64_t(edited) * per;
  }
  return p;
}

}  // namespace deltaedit::model
