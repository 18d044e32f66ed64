// Losses on model outputs: causal-LM cross-entropy (mean and summed forms), sequence
// log-probabilities and the DPO loss (SPEC §4).
#pragma once
#include <cstdint>
#include <limits>
#include <vector>


#include "model/transformer.h"

namespace deltaedit::model {

// One batch of token sequences. input_ids [B, T]; attention_mask [B, T] (nonzero = real token,
// undefined = all real); loss_mask [B, T] (nonzero = this token is a scored target, undefined =
// every real token after the first). Position 0 has no prediction and is never scored, nor is
// padding.
struct Batch {
  torch::Tensor input_ids, attention_mask, loss_mask;
};

// Summed next-token negative log-likelihood and the number of scored tokens, so that batches
// accumulate exactly: mean = sum / count over any number of batches.
struct TokenLoss {
  torch::Tensor sum;  // scalar f64 tensor, differentiable when the logits are
  int64_t count = 0;
};

// Which targets are scored: [B, T-1] bool for the targets input_ids[:, 1:].
torch::Tensor scored_targets(const Batch& batch);

// Cross-entropy of logits [B, T, V] (computed in f32) predicting input_ids[:, t+1] from position t.
TokenLoss causal_lm_loss_sum(const torch::Tensor& logits, const Batch& batch);
// Mean over scored tokens (0 tokens gives NaN, as an empty mean).
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const Batch& batch);

// Per sequence: sum of the log-probabilities of its scored target tokens, [B] f32.
torch::Tensor sequence_logprob(const torch::Tensor& logits, const Batch& batch);

// Per record DPO loss, [B]: −log σ(β·[(π_c − ref_c) − (π_r − ref_r)]) for sequence log-probs.
torch::Tensor dpo_losses(const torch::Tensor& policy_chosen, const torch::Tensor& policy_rejected,
                         const torch::Tensor& ref_chosen, const torch::Tensor& ref_rejected, double beta = 0.1);
// Mean of dpo_losses over the records.
torch::Tensor dpo_loss(const torch::Tensor& policy_chosen, const torch::Tensor& policy_rejected,
                       const torch::Tensor& ref_chosen, const torch::Tensor& ref_rejected, double beta = 0.1);

// Loss of a model over a dataset (no autograd), accumulated in f64.
struct LossTotal {
  double sum = 0;      // summed token NLL
  int64_t count = 0;   // scored tokens
  double mean() const { return count > 0 ? sum / double(count) : std::numeric_limits<double>::quiet_NaN(); }
};
LossTotal evaluate_loss(Model& model, const std::vector<Batch>& batches);

}  // namespace deltaedit::model
