// Gradients of a dataset loss with respect to every model parameter, accumulated over batches in
// f64 and returned as f32 buffers keyed by parameter name (ready to be written as safetensors).
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "model/loss.h"
#include "model/transformer.h"

namespace deltaedit::model {

struct NamedGradient {
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
};

struct GradientOptions {
  std::vector<std::string> names;  // parameters to return; empty = every parameter
  // Also return the diagonal empirical Fisher: mean over batches of the squared per-batch gradient
  // of the batch's mean loss.
  bool fisher = false;
};

struct GradientResult {
  std::map<std::string, NamedGradient> grads;   // ∇ of the global mean loss
  std::map<std::string, NamedGradient> fisher;  // only with GradientOptions::fisher
  double loss_sum = 0;   // summed loss over the dataset (f64)
  int64_t count = 0;     // what the mean divides by (scored tokens, or records)
  size_t batches = 0;    // batches that contributed (count > 0)
  double loss() const { return count > 0 ? loss_sum / double(count) : std::numeric_limits<double>::quiet_NaN(); }
};

// Generic accumulation: batch_loss(model, i) runs the model on batch i and returns its summed loss
// and the count it contributes. The result is ∇(Σ sums / Σ counts), i.e. each batch weighted by its
// count, so it equals the gradient of the global mean regardless of how the data is split.
// Parameter requires_grad flags are restored afterwards.
using BatchLossFn = std::function<TokenLoss(Model&, size_t)>;
GradientResult accumulate_gradients(Model& model, size_t n_batches, const BatchLossFn& batch_loss,
                                    const GradientOptions& options = {});

// Causal-LM loss (mean next-token cross-entropy over all scored tokens of all batches).
GradientResult lm_gradients(Model& model, const std::vector<Batch>& batches, const GradientOptions& options = {});

}  // namespace deltaedit::model
