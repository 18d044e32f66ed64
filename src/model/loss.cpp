#include "model/loss.h"

#include <fmt/format.h>

#include "util/error.h"

namespace deltaedit::model {
namespace {
void check_batch(const Batch& b) {
  const auto& ids = b.input_ids;
  if (!ids.defined() || ids.dim() != 2 || ids.size(1) < 1)
    throw Error(ErrorKind::Usage, "input_ids must be a [batch, length] tensor");
  for (const auto* m : {&b.attention_mask, &b.loss_mask})
    if (m->defined() && m->sizes() != ids.sizes())
      throw Error(ErrorKind::Usage, "attention_mask / loss_mask must have the shape of input_ids");
}

// Log-probabilities of each target token, [B, T-1] f32, and the scored-target mask [B, T-1].
std::pair<torch::Tensor, torch::Tensor> target_logprobs(const torch::Tensor& logits, const Batch& batch) {
  check_batch(batch);
  const auto& ids = batch.input_ids;
  if (logits.dim() != 3 || logits.size(0) != ids.size(0) || logits.size(1) != ids.size(1))
    throw Error(ErrorKind::Usage, "logits must be [batch, length, vocab] matching input_ids");
  const int64_t T = ids.size(1);
  auto scored = scored_targets(batch).to(logits.device());
  auto targets = ids.narrow(1, 1, T - 1).to(logits.device(), torch::kLong);
  auto lp = torch::log_softmax(logits.narrow(1, 0, T - 1).to(torch::kFloat32), -1);
  // Padding may hold any id (even one outside the vocabulary): gather a valid index there.
  auto safe = torch::where(scored, targets, torch::zeros_like(targets));
  auto tok = lp.gather(-1, safe.unsqueeze(-1)).squeeze(-1);
  return {tok, scored};
}
}  // namespace

torch::Tensor scored_targets(const Batch& batch) {
  check_batch(batch);
  const auto& ids = batch.input_ids;
  const int64_t B = ids.size(0), T = ids.size(1);
  auto opts = torch::TensorOptions().dtype(torch::kBool).device(ids.device());
  if (T < 2) return torch::zeros({B, 0}, opts);
  auto s = torch::ones({B, T - 1}, opts);
  if (batch.attention_mask.defined()) {
    auto real = batch.attention_mask.to(ids.device()) != 0;
    // A target is scored only when it and the token predicting it are both real.
    s = s.logical_and(real.narrow(1, 1, T - 1)).logical_and(real.narrow(1, 0, T - 1));
  }
  if (batch.loss_mask.defined()) s = s.logical_and(batch.loss_mask.to(ids.device()).narrow(1, 1, T - 1) != 0);
  return s;
}

TokenLoss causal_lm_loss_sum(const torch::Tensor& logits, const Batch& batch) {
  auto [tok, scored] = target_logprobs(logits, batch);
  TokenLoss r;
  r.sum = -torch::where(scored, tok, torch::zeros_like(tok)).to(torch::kFloat64).sum();
  r.count = scored.sum().item<int64_t>();
  return r;
}

torch::Tensor causal_lm_loss(const torch::Tensor& logits, const Batch& batch) {
  auto r = causal_lm_loss_sum(logits, batch);
  return r.sum / double(r.count);
}

torch::Tensor sequence_logprob(const torch::Tensor& logits, const Batch& batch) {
  auto [tok, scored] = target_logprobs(logits, batch);
  return torch::where(scored, tok, torch::zeros_like(tok)).sum(1);
}

torch::Tensor dpo_losses(const torch::Tensor& pc, const torch::Tensor& pr, const torch::Tensor& rc,
                         const torch::Tensor& rr, double beta) {
  if (pc.sizes() != pr.sizes() || pc.sizes() != rc.sizes() || pc.sizes() != rr.sizes())
    throw Error(ErrorKind::Usage, "DPO log-probabilities must all have the same shape");
  auto margin = (pc.to(torch::kFloat64) - rc.to(torch::kFloat64)) - (pr.to(torch::kFloat64) - rr.to(torch::kFloat64));
  // −log σ(z) = softplus(−z), stable for large |z|.
  return torch::softplus(-beta * margin).to(pc.scalar_type());
}

torch::Tensor dpo_loss(const torch::Tensor& pc, const torch::Tensor& pr, const torch::Tensor& rc,
                       const torch::Tensor& rr, double beta) {
  return dpo_losses(pc, pr, rc, rr, beta).mean();
}

LossTotal evaluate_loss(Model& model, const std::vector<Batch>& batches) {
  torch::NoGradGuard ng;
  LossTotal t;
  for (const auto& b : batches) {
    auto logits = model.forward(b.input_ids, b.attention_mask);
    auto r = causal_lm_loss_sum(logits, b);
    t.sum += r.sum.item<double>();
    t.count += r.count;
  }
  return t;
}

}  // namespace deltaedit::model
