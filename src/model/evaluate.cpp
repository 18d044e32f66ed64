#include "model/evaluate.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "io/writer.h"
#include "text/gsm8k.h"
#include "util/error.h"

namespace deltaedit::model {

std::vector<Batch> make_batches(const std::vector<text::Sequence>& seqs, size_t batch_size) {
  std::vector<Batch> out;
  batch_size = std::max<size_t>(1, batch_size);
  for (size_t s = 0; s < seqs.size(); s += batch_size) {
    const size_t e = std::min(seqs.size(), s + batch_size);
    size_t T = 0;
    for (size_t i = s; i < e; ++i) T = std::max(T, seqs[i].ids.size());
    const int64_t B = int64_t(e - s);
    auto ids = torch::zeros({B, int64_t(T)}, torch::kInt64);
    auto att = torch::zeros({B, int64_t(T)}, torch::kInt64);
    auto lm = torch::zeros({B, int64_t(T)}, torch::kInt64);
    auto pi = ids.accessor<int64_t, 2>();
    auto pa = att.accessor<int64_t, 2>();
    auto pl = lm.accessor<int64_t, 2>();
    for (size_t i = s; i < e; ++i) {
      const auto& q = seqs[i];
      for (size_t t = 0; t < q.ids.size(); ++t) {
        pi[int64_t(i - s)][int64_t(t)] = q.ids[t];
        pa[int64_t(i - s)][int64_t(t)] = 1;
        pl[int64_t(i - s)][int64_t(t)] = q.scored[t];
      }
    }
    out.push_back({ids, att, lm});
  }
  return out;
}

namespace {
std::vector<text::Sequence> seqs_of(const std::vector<text::Record>& r, bool rejected) {
  std::vector<text::Sequence> v;
  for (const auto& x : r) v.push_back(rejected ? *x.rejected : x.seq);
  return v;
}

TokenLoss dpo_batch(Model& m, const EvalSet& set, size_t i) {
  auto lc = sequence_logprob(m.forward(set.chosen[i].input_ids, set.chosen[i].attention_mask),
                             set.chosen[i]);
  auto lr = sequence_logprob(m.forward(set.rejected[i].input_ids, set.rejected[i].attention_mask),
                             set.rejected[i]);
  auto l = dpo_losses(lc, lr, set.ref_chosen[i], set.ref_rejected[i], set.beta);
  return {l.to(torch::kFloat64).sum(), l.size(0)};
}
}  // namespace

EvalSet make_dpo_eval_set(std::vector<text::Record> records, size_t batch_size, double beta,
                          const ReferenceLogprobs& reference_logprobs) {
  EvalSet s;
  s.kind = LossKind::DPO;
  s.beta = beta;
  s.records = std::move(records);
  for (const auto& r : s.records)
    if (!r.preference)
      throw Error(
          ErrorKind::Format,
          fmt::format("line {}: the DPO loss needs {{\"prompt\",\"chosen\",\"rejected\"}} records",
                      r.line));
  if (!reference_logprobs)
    throw Error(ErrorKind::Usage, "the DPO loss needs a reference model (--ref)");
  s.chosen = make_batches(seqs_of(s.records, false), batch_size);
  s.rejected = make_batches(seqs_of(s.records, true), batch_size);
  std::vector<Batch> all = s.chosen;
  all.insert(all.end(), s.rejected.begin(), s.rejected.end());
  auto lp = reference_logprobs(all);
  if (lp.size() != all.size())
    throw Error(ErrorKind::Internal,
                "the reference returned log-probabilities for a different number of batches");
  const size_t n = s.chosen.size();
  s.ref_chosen.assign(lp.begin(), lp.begin() + std::ptrdiff_t(n));
  s.ref_rejected.assign(lp.begin() + std::ptrdiff_t(n), lp.end());
  return s;
}

EvalSet make_eval_set(std::vector<text::Record> records, size_t batch_size, LossKind kind,
                      Model* reference, double beta) {
  if (kind == LossKind::DPO) {
    ReferenceLogprobs ref;
    if (reference)
      ref = [reference](const std::vector<Batch>& batches) {
        torch::NoGradGuard ng;
        std::vector<torch::Tensor> v;
        for (const auto& b : batches)
          v.push_back(sequence_logprob(reference->forward(b.input_ids, b.attention_mask), b));
        return v;
      };
    return make_dpo_eval_set(std::move(records), batch_size, beta, ref);
  }
  EvalSet s;
  s.kind = kind;
  s.beta = beta;
  s.records = std::move(records);
  s.batches = make_batches(seqs_of(s.records, false), batch_size);
  return s;
}

double dataset_loss(Model& model, const EvalSet& set) {
  torch::NoGradGuard ng;
  if (set.kind == LossKind::CausalLM) return evaluate_loss(model, set.batches).mean();
  double sum = 0;
  int64_t n = 0;
  for (size_t i = 0; i < set.chosen.size(); ++i) {
    io::check_interrupted();
    auto t = dpo_batch(model, set, i);
    sum += t.sum.item<double>();
    n += t.count;
  }
  return n ? sum / double(n) : std::nan("");
}

GradientResult dataset_gradients(Model& model, const EvalSet& set,
                                 const std::vector<std::string>& names, bool fisher) {
  GradientOptions opt;
  opt.names = names;
  opt.fisher = fisher;
  if (set.kind == LossKind::CausalLM) {
    return accumulate_gradients(
        model, set.batches.size(),
        [&](Model& m, size_t i) {
          io::check_interrupted();
          const auto& b = set.batches[i];
          return causal_lm_loss_sum(m.forward(b.input_ids, b.attention_mask), b);
        },
        opt);
  }
  return accumulate_gradients(
      model, set.chosen.size(),
      [&](Model& m, size_t i) {
        io::check_interrupted();
        return dpo_batch(m, set, i);
      },
      opt);
}

AccuracyResult dataset_accuracy(Model& model, const text::Tokenizer& tok,
                                const std::vector<text::Record>& records, int64_t max_new_tokens) {
  torch::NoGradGuard ng;
  AccuracyResult r;
  std::optional<int64_t> eos;
  if (auto e = tok.eos_id())
    eos = *e;
  else if (model.config().eos_token_id)
    eos = *model.config().eos_token_id;
  // Prompts of equal token length decode together with one KV cache (no padding needed), in
  // groups of at most kGroup; every sequence's greedy path is its own.
  constexpr size_t kGroup = 64;
  std::map<size_t, std::vector<size_t>> by_len;
  std::vector<std::vector<int32_t>> prompts(records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& rec = records[i];
    if (rec.prompt.empty() && rec.response.empty())
      throw Error(
          ErrorKind::Format,
          fmt::format("line {}: accuracy needs {{\"prompt\",\"response\"}} records", rec.line));
    prompts[i] = tok.encode(rec.prompt, true);
    by_len[prompts[i].size()].push_back(i);
  }
  r.outputs.assign(records.size(), {});
  r.output_ids.assign(records.size(), {});
  std::vector<bool> ok(records.size(), false);
  for (const auto& [len, all] : by_len) {
    for (size_t g0 = 0; g0 < all.size(); g0 += kGroup) {
      io::check_interrupted();
      std::vector<size_t> idx(all.begin() + g0, all.begin() + std::min(all.size(), g0 + kGroup));
      const int64_t B = int64_t(idx.size());
      auto ids = torch::empty({B, int64_t(len)}, torch::kInt64);
      auto pa = ids.accessor<int64_t, 2>();
      for (int64_t b = 0; b < B; ++b)
        for (size_t t = 0; t < len; ++t) pa[b][int64_t(t)] = prompts[idx[size_t(b)]][t];
      KVCache cache;
      auto logits = model.forward(ids.to(model.device()), cache);
      std::vector<std::vector<int32_t>> gen(static_cast<size_t>(B));
      std::vector<bool> done(static_cast<size_t>(B), false);
      for (int64_t step = 0; step < max_new_tokens; ++step) {
        io::check_interrupted();  // a group decodes for seconds: Ctrl-C between tokens
        auto next = logits.select(1, logits.size(1) - 1).argmax(-1).to(torch::kCPU);
        auto pn = next.accessor<int64_t, 1>();
        bool all_done = true;
        for (int64_t b = 0; b < B; ++b) {
          if (done[size_t(b)]) continue;
          gen[size_t(b)].push_back(int32_t(pn[b]));
          if (eos && pn[b] == *eos) done[size_t(b)] = true;
          all_done = all_done && done[size_t(b)];
        }
        if (all_done || step + 1 == max_new_tokens) break;
        logits = model.forward(next.view({B, 1}).to(model.device()), cache);
      }
      for (int64_t b = 0; b < B; ++b) {
        const size_t i = idx[size_t(b)];
        r.outputs[i] = tok.decode(gen[size_t(b)], true);
        r.output_ids[i] = std::move(gen[size_t(b)]);
        ok[i] = text::answers_match(text::extract_answer(r.outputs[i]),
                                    text::extract_answer(records[i].response));
      }
    }
  }
  r.examples = records.size();
  r.prompt_ids = std::move(prompts);
  for (bool b : ok) r.correct += b;
  return r;
}

Rule parse_rule(const std::string& s) {
  if (s == "left") return Rule::Left;
  if (s == "mid" || s == "midpoint") return Rule::Mid;
  if (s == "trapezoid") return Rule::Trapezoid;
  throw Error(ErrorKind::Usage, "--rule '" + s + "': use left, mid or trapezoid");
}

nlohmann::json ApproxResult::to_json() const {
  nlohmann::json pt = nlohmann::json::array();
  for (const auto& [n, c] : per_tensor) pt.push_back({{"name", n}, {"contribution", c}});
  return {{"approximation_term", approximation_term},
          {"true_delta_loss", true_delta_loss},
          {"gap", gap},
          {"steps", steps},
          {"rule", rule == Rule::Left  ? "left"
                   : rule == Rule::Mid ? "mid"
                                       : "trapezoid"},
          {"intensity", intensity},
          {"fisher_term", fisher_term ? nlohmann::json(*fisher_term) : nlohmann::json(nullptr)},
          {"loss_post", loss_post},
          {"loss_edit", loss_edit},
          {"nodes", {{"t", nodes_t}, {"value", nodes_value}}},
          {"per_tensor", pt}};
}

std::vector<std::pair<double, double>> quadrature_nodes(int steps, Rule rule) {
  if (steps < 1) throw Error(ErrorKind::Usage, "--steps must be at least 1");
  std::vector<std::pair<double, double>> n;
  const double h = 1.0 / steps;
  for (int c = 0; c < steps; ++c) {
    if (rule == Rule::Left) n.emplace_back(c * h, h);         // t_c = c/C
    if (rule == Rule::Mid) n.emplace_back((c + 0.5) * h, h);  // t_c = (c+½)/C
  }
  if (rule == Rule::Trapezoid)
    for (int c = 0; c <= steps; ++c) n.emplace_back(c * h, (c == 0 || c == steps) ? h / 2 : h);
  return n;
}

RiemannSum riemann_sum(int steps, Rule rule, size_t tensors,
                       const std::function<std::vector<double>(double t)>& dots_at) {
  RiemannSum r;
  r.per_tensor.assign(tensors, 0.0);
  for (const auto& [t, w] : quadrature_nodes(steps, rule)) {
    auto dots = dots_at(t);
    double node = 0;
    for (size_t i = 0; i < tensors; ++i) {
      r.per_tensor[i] += w * dots[i];
      node += dots[i];
    }
    r.t.push_back(t);
    r.weight.push_back(w);
    r.node_value.push_back(node);
  }
  for (double c : r.per_tensor) r.total += c;
  return r;
}

namespace {
double fisher_term(const GradientResult& g, const std::vector<std::string>& names,
                   std::map<std::string, torch::Tensor>& D) {
  double f = 0;
  for (const auto& n : names) {
    const auto& fv = g.fisher.at(n).values;
    const float* d = D[n].data_ptr<float>();
    for (size_t i = 0; i < fv.size(); ++i) f += double(fv[i]) * double(d[i]) * double(d[i]);
  }
  return 0.5 * f;
}
}  // namespace

ApproxResult approximation_term(Model& model, const EvalSet& set,
                                const std::map<std::string, std::vector<float>>& increment,
                                double delta_sumsq, int steps, Rule rule, bool fisher) {
  std::vector<std::string> names;
  std::map<std::string, torch::Tensor> D;
  double d_sumsq = 0;
  for (const auto& [n, v] : increment) {
    if (!model.has_param(n)) continue;  // e.g. a tied lm_head: its gradient lives in embed_tokens
    const auto& p = model.param(n);
    if (int64_t(v.size()) != p.numel())
      throw Error(ErrorKind::Internal, "increment does not match the parameter's size", "", n);
    names.push_back(n);
    D[n] = torch::from_blob(const_cast<float*>(v.data()), p.sizes(), torch::kFloat32).clone();
    for (float x : v) d_sumsq += double(x) * double(x);
  }
  ApproxResult r;
  r.steps = steps;
  r.rule = rule;
  r.intensity = delta_sumsq > 0 ? d_sumsq / delta_sumsq : 0.0;
  auto saved = model.state();
  bool have_post = false;
  auto rs = riemann_sum(steps, rule, names.size(), [&](double t) {
    model.load_state(saved);
    if (t != 0.0)
      for (const auto& n : names) model.add_(n, D[n], t);
    const bool at_post = t == 0.0;
    auto g = dataset_gradients(model, set, names, fisher && at_post);
    if (at_post) {
      r.loss_post = g.loss();
      have_post = true;
      if (fisher) r.fisher_term = fisher_term(g, names, D);
    }
    std::vector<double> dots;
    for (const auto& n : names) {
      const auto& gv = g.grads.at(n).values;
      const float* d = D[n].data_ptr<float>();
      double s = 0;
      for (size_t i = 0; i < gv.size(); ++i) s += double(gv[i]) * double(d[i]);
      dots.push_back(s);
    }
    return dots;
  });
  model.load_state(saved);
  if (!have_post) {
    if (fisher) {
      auto g = dataset_gradients(model, set, names, true);
      r.loss_post = g.loss();
      r.fisher_term = fisher_term(g, names, D);
    } else {
      r.loss_post = dataset_loss(model, set);
    }
  }
  for (const auto& n : names) model.add_(n, D[n], 1.0);
  r.loss_edit = dataset_loss(model, set);
  model.load_state(saved);
  for (size_t i = 0; i < names.size(); ++i) r.per_tensor.emplace_back(names[i], rs.per_tensor[i]);
  r.approximation_term = rs.total;
  r.nodes_t = rs.t;
  r.nodes_value = rs.node_value;
  r.true_delta_loss = r.loss_edit - r.loss_post;
  r.gap = r.true_delta_loss - r.approximation_term;
  return r;
}

}  // namespace deltaedit::model
