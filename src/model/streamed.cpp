#include "model/streamed.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>

#include <torch/autograd.h>

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
  void add(torch::Tensor g, const std::vector<int64_t>& shape, const torch::TensorOptions& opt, int64_t count,
           bool want_fisher) {
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
  std::pair<torch::Tensor, torch::Tensor> finish(const std::vector<int64_t>& shape, int64_t count, size_t batches,
                                                 bool want_fisher) {
    auto cpu = torch::TensorOptions().dtype(torch::kFloat32);
    torch::Tensor g32, f32;
    if (n == 0 || count == 0) {
      g32 = torch::zeros(shape, cpu);
      if (want_fisher) f32 = torch::zeros(shape, cpu);
      return {g32, f32};
    }
    if (n >= 2) {
      g32 = (sum / double(count)).to(torch::kCPU, torch::kFloat32).contiguous();
      if (want_fisher) f32 = (fisher / double(batches)).to(torch::kCPU, torch::kFloat32).contiguous();
      sum = fisher = torch::Tensor();
      return {g32, f32};
    }
    g32 = torch::empty(shape, cpu);
    if (want_fisher) f32 = torch::empty(shape, cpu);
    for_each_slab(shape, [&](int64_t r, int64_t k) {
      auto g64 = single.narrow(0, r, k).to(torch::kFloat64);
      g32.narrow(0, r, k).copy_((g64 / double(count)).to(torch::kCPU, torch::kFloat32));
      if (want_fisher)
        f32.narrow(0, r, k).copy_(((g64 / double(single_count)).square() / double(batches)).to(torch::kCPU, torch::kFloat32));
    });
    single = torch::Tensor();
    return {g32, f32};
  }
};

double dot_f64(const torch::Tensor& g, const torch::Tensor& d) {
  const float* pg = g.data_ptr<float>();
  const float* pd = d.data_ptr<float>();
  double s = 0;
  for (int64_t i = 0, n = g.numel(); i < n; ++i) s += double(pg[i]) * double(pd[i]);
  return s;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
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
    auto d = torch::empty(shape, torch::kFloat32);
    const double dss = edit->increment(name, std::span<float>(d.data_ptr<float>(), size_t(d.numel())));
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

StreamedModel::StreamedModel(const io::TensorSource& post, const LoadOptions& options) : post_(post), options_(options) {
  if (options.dtype != torch::kFloat32 && options.dtype != torch::kBFloat16)
    throw Error(ErrorKind::Unsupported, "model dtype must be float32 or bfloat16");
  if (!post.config())
    throw Error(ErrorKind::Format, "checkpoint has no config.json; the model runtime needs one", post.path().string());
  config_ = *post.config();
  arch_ = resolve_arch(config_);
  const ArchSpec& a = arch_;
  const int64_t h = a.hidden, qd = a.heads * a.head_dim, kvd = a.kv_heads * a.head_dim, f = a.intermediate;
  auto add = [&](const std::string& n, std::vector<int64_t> s) {
    names_.push_back(n);
    shapes_[n] = std::move(s);
  };
  add(kEmbed, {a.vocab, h});
  for (int64_t l = 0; l < a.layers; ++l) {
    for (const auto& [n, m] : layer_weight_names(a, l)) {
      std::vector<int64_t> s;
      const auto ends = [&](const char* suf) { return n.size() >= std::strlen(suf) && n.compare(n.size() - std::strlen(suf), std::string::npos, suf) == 0; };
      if (ends("layernorm.weight")) s = {h};
      else if (ends("q_proj.weight")) s = {qd, h};
      else if (ends("q_proj.bias")) s = {qd};
      else if (ends("k_proj.weight") || ends("v_proj.weight")) s = {kvd, h};
      else if (ends("k_proj.bias") || ends("v_proj.bias")) s = {kvd};
      else if (ends("o_proj.weight")) s = {h, qd};
      else if (ends("o_proj.bias") || ends("down_proj.bias")) s = {h};
      else if (ends("q_norm.weight") || ends("k_norm.weight")) s = {a.head_dim};
      else if (ends("gate_proj.weight") || ends("up_proj.weight")) s = {f, h};
      else if (ends("gate_proj.bias") || ends("up_proj.bias")) s = {f};
      else if (ends("down_proj.weight")) s = {h, f};
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
      warnings_.push_back("lm_head.weight is ignored: the config ties the head to model.embed_tokens.weight");
      continue;
    }
    throw Error(ErrorKind::Unsupported,
                fmt::format("tensor is not part of the {} architecture as configured", family_name(a.family)),
                post.path().string(), n);
  }
  for (const auto& n : names_) {
    if (!post.contains(n)) throw Error(ErrorKind::Format, "tensor missing from the checkpoint", post.path().string(), n);
    const auto& info = post.info(n);
    if (!io::is_compute_dtype(info.dtype))
      throw Error(ErrorKind::Unsupported,
                  "dtype " + std::string(io::dtype_name(info.dtype)) + " is not loadable (F16, BF16, F32, F64 are)",
                  post.path().string(), n);
    if (info.shape != shapes_[n])
      throw Error(ErrorKind::Format,
                  "shape " + shape_str(info.shape) + " does not match the config's " + shape_str(shapes_[n]),
                  post.path().string(), n);
  }
  inv_freq_ = rope_inv_freq(a.rope, a.head_dim).to(options.device);
}

const std::vector<int64_t>& StreamedModel::shape(const std::string& name) const {
  auto it = shapes_.find(name);
  if (it == shapes_.end()) throw Error(ErrorKind::Usage, "the model has no such parameter", {}, name);
  return it->second;
}

torch::Tensor StreamedModel::load(const std::string& n) const {
  const auto& info = post_.info(n);
  auto t = torch::empty(shapes_.at(n), torch::kFloat32);
  io::to_f32(post_.data(n), info.dtype, std::span<float>(t.data_ptr<float>(), size_t(t.numel())));
  post_.release(n);
  return t.to(options_.device, options_.dtype);
}

void StreamedModel::walk(const EvalSet& set, std::vector<Stream>& streams, EditState* edit, bool all_grads,
                         const Reduce& reduce) {
  if (set.kind != LossKind::CausalLM)
    throw Error(ErrorKind::Unsupported, "the streamed passes compute the causal-LM loss (--loss ce); the DPO loss "
                                        "runs in memory (drop --streamed)");
  const ArchSpec& a = arch_;
  const auto dev = options_.device;
  const auto dtype = options_.dtype;
  const auto popt = torch::TensorOptions().dtype(dtype).device(dev);
  const int64_t L = a.layers;
  const size_t S = streams.size();

  // Batches: ids on the device, positions and masks as Model::forward makes them.
  std::vector<PreparedBatch> bs;
  for (const auto& b : set.batches) {
    PreparedBatch p;
    p.batch = &b;
    const auto& ids = b.input_ids;
    if (!ids.defined() || ids.dim() != 2 || ids.size(0) < 1 || ids.size(1) < 1)
      throw Error(ErrorKind::Usage, "input_ids must be a non-empty [batch, length] tensor");
    p.ids = ids.to(dev, torch::kLong);
    const int64_t lo = p.ids.min().item<int64_t>(), hi = p.ids.max().item<int64_t>();
    if (lo < 0 || hi >= a.vocab)
      throw Error(ErrorKind::Usage,
                  fmt::format("token id {} is outside the vocabulary [0, {})", lo < 0 ? lo : hi, a.vocab));
    const int64_t B = p.ids.size(0), T = p.ids.size(1);
    if (b.attention_mask.defined()) {
      auto valid = b.attention_mask.to(dev) != 0;
      p.tables = pass_tables(inv_freq_, batch_positions(valid), valid, B, T, 0, dev);
    } else {
      auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kLong).device(dev)).unsqueeze(0).expand({B, T});
      p.tables = pass_tables(inv_freq_, pos, {}, B, T, 0, dev);
    }
    bs.push_back(std::move(p));
  }
  const size_t NB = bs.size();

  const auto needs_grad = [&](const std::string& n) { return all_grads || (edit && edit->edited.count(n)); };
  const auto increment = [&](const std::string& n) { return edit ? edit->increment(n, shapes_.at(n)) : torch::Tensor(); };
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
    auto [g, f] = acc.finish(shapes_.at(n), streams[s].count, streams[s].batches, streams[s].fisher);
    reduce(s, n, g, f, d);
  };

  // acts[u][s][b]: input of unit u (1..L+1) for stream s, batch b; gx[s][b]: ∂L_b/∂(that input)
  // while walking back; active[s][b]: the batch has scored tokens (as accumulate_gradients skips
  // the others).
  std::vector<std::vector<std::vector<torch::Tensor>>> acts(size_t(L + 2),
                                                            std::vector<std::vector<torch::Tensor>>(S));
  std::vector<std::vector<torch::Tensor>> gx(S, std::vector<torch::Tensor>(NB));
  std::vector<std::vector<torch::Tensor>> pending(S, std::vector<torch::Tensor>(NB));  // tied head's ∇embed
  std::vector<std::vector<char>> active(S, std::vector<char>(NB, 0));
  std::vector<int64_t> counts(NB, 0);  // scored tokens per batch

  {  // Forward: the embedding and every decoder layer.
    torch::NoGradGuard ng;
    {
      auto d = increment(kEmbed);
      for (size_t s = 0; s < S; ++s) {
        auto w = form(kEmbed, streams[s].t, d);
        for (size_t b = 0; b < NB; ++b) acts[1][s].push_back(torch::embedding(w, bs[b].ids));
      }
    }
    for (int64_t l = 0; l < L; ++l) {
      io::check_interrupted();
      const auto wn = layer_weight_names(a, l);
      std::map<std::string, torch::Tensor> D;
      for (const auto& [n, m] : wn) D[n] = increment(n);
      for (size_t s = 0; s < S; ++s) {
        LayerWeights w;
        for (const auto& [n, m] : wn) w.*m = form(n, streams[s].t, D[n]);
        for (size_t b = 0; b < NB; ++b)
          acts[size_t(l + 2)][s].push_back(decoder_layer(a, w, acts[size_t(l + 1)][s][b], bs[b].tables, size_t(l), dtype));
        if (!streams[s].grad) acts[size_t(l + 1)][s].clear();
      }
    }
  }

  {  // The head: losses, and for gradient streams its backward at once.
    const std::string head = a.tied ? kEmbed : kHead;
    auto d_norm = increment(kNorm), d_head = increment(head);
    for (size_t s = 0; s < S; ++s) {
      io::check_interrupted();
      Stream& st = streams[s];
      auto wn = form(kNorm, st.t, d_norm), wh = form(head, st.t, d_head);
      auto& xs = acts[size_t(L + 1)][s];
      if (!st.grad) {
        torch::NoGradGuard ng;
        for (size_t b = 0; b < NB; ++b) {
          auto tl = causal_lm_loss_sum(output_logits(a, xs[b], wn, wh), *bs[b].batch);
          st.loss_sum += tl.sum.item<double>();
          st.count += tl.count;
        }
        xs.clear();
        continue;
      }
      torch::AutoGradMode on(true);
      const bool gn = needs_grad(kNorm), gh = needs_grad(head);
      wn.requires_grad_(gn);
      wh.requires_grad_(gh);
      Accum an, ah;
      for (size_t b = 0; b < NB; ++b) {
        auto x = xs[b].detach().requires_grad_(true);
        auto tl = causal_lm_loss_sum(output_logits(a, x, wn, wh), *bs[b].batch);
        if (tl.count < 0) throw Error(ErrorKind::Internal, "a batch reported a negative count");
        if (tl.count == 0) continue;
        const double v = tl.sum.item<double>();
        if (!std::isfinite(v)) throw Error(ErrorKind::Numeric, "the loss of batch " + std::to_string(b) + " is not finite");
        tl.sum.backward();
        st.loss_sum += v;
        st.count += tl.count;
        ++st.batches;
        active[s][b] = 1;
        counts[b] = tl.count;
        if (gn) an.add(wn.grad(), shapes_.at(kNorm), popt, tl.count, st.fisher);
        if (gh) {
          if (a.tied) pending[s][b] = wh.grad();
          else ah.add(wh.grad(), shapes_.at(head), popt, tl.count, st.fisher);
        }
        wn.mutable_grad() = torch::Tensor();
        wh.mutable_grad() = torch::Tensor();
        gx[s][b] = x.grad();
        xs[b] = torch::Tensor();
      }
      xs.clear();
      wn = wh = torch::Tensor();
      if (gn) finish(s, kNorm, an, d_norm);
      if (gh && !a.tied) finish(s, head, ah, d_head);
    }
  }

  // Backward through the decoder layers, last first, then the embedding.
  bool any_grad = false;
  for (const auto& st : streams) any_grad = any_grad || st.grad;
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
      for (size_t b = 0; b < NB; ++b) {
        if (!active[s][b]) continue;
        auto x = xs[b].detach().requires_grad_(true);
        auto out = decoder_layer(a, w, x, bs[b].tables, size_t(l), dtype);
        torch::autograd::backward({out}, {gx[s][b]});
        const int64_t count = counts[b];
        for (const auto& [n, m] : wn) {
          if (!needs_grad(n)) continue;
          acc[n].add((w.*m).grad(), shapes_.at(n), popt, count, streams[s].fisher);
          (w.*m).mutable_grad() = torch::Tensor();
        }
        gx[s][b] = x.grad();
        xs[b] = torch::Tensor();
      }
      xs.clear();
      w = LayerWeights();
      for (const auto& [n, m] : wn)
        if (needs_grad(n)) finish(s, n, acc[n], D[n]);
    }
  }
  if (!needs_grad(kEmbed)) return;
  auto d = increment(kEmbed);
  for (size_t s = 0; s < S; ++s) {
    if (!streams[s].grad) continue;
    torch::AutoGradMode on(true);
    auto w = form(kEmbed, streams[s].t, d);
    w.requires_grad_(true);
    Accum acc;
    for (size_t b = 0; b < NB; ++b) {
      if (!active[s][b]) continue;
      auto out = torch::embedding(w, bs[b].ids);
      torch::autograd::backward({out}, {gx[s][b]});
      gx[s][b] = torch::Tensor();
      auto g = w.grad();
      // A tied embedding's gradient is the head's and the lookup's, summed once as autograd does.
      if (a.tied && pending[s][b].defined()) g = pending[s][b] + g;
      pending[s][b] = torch::Tensor();
      const int64_t count = counts[b];
      acc.add(g, shapes_.at(kEmbed), popt, count, streams[s].fisher);
      w.mutable_grad() = torch::Tensor();
    }
    w = torch::Tensor();
    finish(s, kEmbed, acc, d);
  }
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
       [&](size_t, const std::string& n, const torch::Tensor& g, const torch::Tensor&, const torch::Tensor&) {
         sink(n, g);
       });
  GradientResult r;
  r.loss_sum = st[0].loss_sum;
  r.count = st[0].count;
  r.batches = st[0].batches;
  return r;
}

ApproxResult StreamedModel::approximation_term(const EvalSet& set, const StreamedEdit& edit, int steps, Rule rule,
                                               bool fisher) {
  EditState es;
  es.edit = &edit;
  for (const auto& n : edit.names)
    if (shapes_.count(n)) es.edited.insert(n);  // a tied lm_head: its gradient lives in embed_tokens
  const std::vector<std::string> names(es.edited.begin(), es.edited.end());  // sorted, as the map in memory
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
       [&](size_t s, const std::string& n, const torch::Tensor& g, const torch::Tensor& f, const torch::Tensor& d) {
         auto it = index.find(n);
         if (it == index.end() || !d.defined()) return;
         dots[s][it->second] = dot_f64(g, d);
         if (f.defined()) {
           const float* pf = f.data_ptr<float>();
           const float* pd = d.data_ptr<float>();
           double x = 0;
           for (int64_t i = 0; i < f.numel(); ++i) x += double(pf[i]) * double(pd[i]) * double(pd[i]);
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
  const auto mean = [](const Stream& s) { return s.count > 0 ? s.loss_sum / double(s.count) : std::nan(""); };
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

StreamedPlan StreamedModel::plan(const EvalSet& set, int64_t points, int64_t gradient_points, size_t edited) const {
  StreamedPlan p;
  const ArchSpec& a = arch_;
  const uint64_t cd = options_.dtype == torch::kFloat32 ? 4 : 2;
  p.units = a.layers + 2;
  p.streams = points;
  p.gradient_streams = gradient_points;
  int64_t max_bt = 0;
  for (const auto& b : set.batches) {
    p.tokens += b.input_ids.numel();
    max_bt = std::max<int64_t>(max_bt, b.input_ids.numel());
  }
  const bool approx = edited > 0;
  std::vector<std::vector<std::string>> units;
  units.push_back({kEmbed});
  for (int64_t l = 0; l < a.layers; ++l) {
    units.emplace_back();
    for (const auto& [n, m] : layer_weight_names(a, l)) units.back().push_back(n);
  }
  units.push_back({kNorm, a.tied ? kEmbed : kHead});
  const bool many_batches = set.batches.size() > 1;
  uint64_t params = 0;
  for (const auto& n : names_) params += uint64_t(numel_of(shapes_.at(n)));
  for (const auto& u : units) {
    uint64_t n = 0, largest = 0;
    for (const auto& t : u) {
      const uint64_t k = uint64_t(numel_of(shapes_.at(t)));
      n += k;
      largest = std::max(largest, k);
    }
    p.unit_bytes = std::max(p.unit_bytes, 4 * n);
    // D of the unit (f32) while the engine forms one more tensor (its Δ' and D), then one
    // stream's weights, their gradients and the f64 sums of several batches (or one f64 slab).
    const uint64_t d = approx ? 4 * n : 0;
    const uint64_t gen = approx ? 8 * largest : 0;
    const uint64_t grads = gradient_points > 0 ? cd * n + (many_batches ? 8 * n : 8 * uint64_t(kSlab)) : 0;
    p.weight_bytes = std::max(p.weight_bytes, d + std::max(gen, cd * n + grads));
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
