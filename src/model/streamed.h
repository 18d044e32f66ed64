// The model commands' passes (loss, gradient, approximation term) in memory bounded by about one
// decoder layer, whatever the model size. The weights stay memory-mapped; a pass walks the model
// unit by unit (the embedding, each decoder layer, the final norm with the head), forms a unit's
// weights W_post + t·D in the compute dtype when it reaches it and drops them after. Only the
// input activations of each unit are kept. The backward walk recomputes one unit at a time with
// autograd and reduces each weight gradient at once (into ⟨∇L, D⟩ per tensor, or hands it to a
// sink), so no whole-model gradient exists. The increments D come one tensor at a time from the
// caller (the edit engine regenerates them), and every node of a Riemann sum runs in the same
// walk: a unit's D is formed twice per approximation (once forward, once backward), whatever C.
//
// The numerics are those of Model with the same dataset: the same layer code, the same batches,
// the same f64 accumulation of batch gradients, the same quadrature nodes.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "io/tensor_source.h"
#include "model/evaluate.h"
#include "model/transformer.h"
#include "util/big_buffer.h"

namespace deltaedit::model {

// The increments of an edit, asked for one tensor at a time.
struct StreamedEdit {
  std::vector<std::string> names;  // tensors with an increment (checkpoint names)
  // D of `name`: an f32 CPU tensor of the tensor's numel (any shape); ‖Δ‖² into delta_sumsq.
  std::function<torch::Tensor(const std::string& name, double& delta_sumsq)> increment;
  // ‖Δ‖² of an edited tensor the model does not use (a tied model's lm_head.weight).
  std::function<double(const std::string& name)> delta_sumsq;
};

// An f32 CPU tensor that owns `buffer` (no copy).
torch::Tensor owning_tensor(util::BigFloatBuffer&& buffer);

// What a streamed run will do and hold (estimates, bytes).
struct StreamedPlan {
  int64_t units = 0;               // embedding + decoder layers + head
  int64_t streams = 0;             // points t of the path walked together
  int64_t gradient_streams = 0;    // of them, those that need a gradient
  int64_t tokens = 0;              // positions over all batches (padding included)
  uint64_t unit_bytes = 0;         // the largest unit's weights in f32
  uint64_t weight_bytes = 0;       // peak of formed weights, increments and gradients of one unit
  uint64_t activation_bytes = 0;   // kept unit inputs (and activation gradients)
  uint64_t peak_bytes = 0;         // weight_bytes + activation_bytes + logits
  uint64_t in_memory_bytes = 0;    // what the in-memory path holds for the same command
  uint64_t increments_formed = 0;  // D of one tensor formed, summed over the run
  nlohmann::json to_json() const;
};

class StreamedModel {
 public:
  // Validates the checkpoint against its config (names, shapes, dtypes) without reading weights.
  explicit StreamedModel(const io::TensorSource& post, const LoadOptions& options = {});

  const io::ModelConfig& config() const { return config_; }
  const ArchSpec& arch() const { return arch_; }
  const std::vector<std::string>& param_names() const { return names_; }
  const std::vector<int64_t>& shape(const std::string& name) const;
  const std::vector<std::string>& warnings() const { return warnings_; }

  // Mean loss of W_post over the set (CausalLM: token mean; DPO: record mean; as dataset_loss).
  double loss(const EvalSet& set);
  // Per batch, each sequence's summed log-probability of its scored targets ([B] f32 CPU, as
  // sequence_logprob on Model::forward): the reference side of a streamed DPO set
  // (make_dpo_eval_set), one forward walk whatever the number of batches.
  std::vector<torch::Tensor> sequence_logprobs(const std::vector<Batch>& batches);
  // Called after each unit of a walk (the embedding, a decoder layer, the head), forward then
  // backward: what the walk is doing, units done, units in the walk.
  using Progress = std::function<void(const char* phase, size_t done, size_t total)>;
  void set_progress(Progress p) { progress_ = std::move(p); }
  // ∇ of the mean loss at W_post, handed to `sink` as soon as it is complete: rows
  // [row, row + grad.size(0)) of the tensor (f32, CPU, contiguous; the whole tensor with row 0,
  // except a large head, which comes in row slabs). Returns loss_sum/count/batches (grads empty).
  using GradientSink =
      std::function<void(const std::string& name, int64_t row, const torch::Tensor& grad)>;
  GradientResult gradients(const EvalSet& set, const GradientSink& sink);
  // The approximation term of an edit, as approximation_term() computes it on a Model at W_post.
  ApproxResult approximation_term(const EvalSet& set, const StreamedEdit& edit, int steps,
                                  Rule rule, bool fisher);

  // What the commands above will hold: `points` path points of which `gradient_points` need a
  // gradient; `edited` = tensors with an increment.
  StreamedPlan plan(const EvalSet& set, int64_t points, int64_t gradient_points,
                    size_t edited) const;

  // Rows of the head formed at once: 0 (default) slices only a head over 512 MB in f32, into
  // 64 MB slabs (agreeing with the whole-head product to rounding); a positive count forces it.
  void set_head_slab_rows(int64_t rows) { head_slab_rows_ = rows; }

 private:
  struct Stream {
    double t = 0;
    bool grad = false, fisher = false;
    double loss_sum = 0;
    int64_t count = 0;
    size_t batches = 0;
    std::vector<torch::Tensor>* logprobs = nullptr;  // a no-gradient stream: each batch's
                                                     // sequence log-probabilities, [B]
  };
  // Called with each finished gradient of a stream (f32 CPU), its diagonal Fisher when asked (or
  // undefined), and D of the tensor (f32 CPU, or undefined when not edited): rows [row, row + k)
  // of the tensor, every tensor in ascending row order.
  using Reduce = std::function<void(size_t stream, const std::string& name, int64_t row,
                                    const torch::Tensor& grad, const torch::Tensor& fisher,
                                    const torch::Tensor& d)>;
  struct EditState;
  void walk(const EvalSet& set, std::vector<Stream>& streams, EditState* edit, bool all_grads,
            const Reduce& reduce);
  torch::Tensor load(const std::string& name) const;  // W_post of one tensor, compute dtype
  torch::Tensor load_rows(const std::string& name, int64_t row, int64_t rows) const;
  torch::Tensor load_rows(const std::string& name, const std::vector<int64_t>& rows) const;
  int64_t head_slab() const;  // rows per head slab, or 0 for the whole head

  const io::TensorSource& post_;
  LoadOptions options_;
  io::ModelConfig config_;
  ArchSpec arch_;
  std::vector<std::string> names_;
  std::map<std::string, std::vector<int64_t>> shapes_;
  std::vector<std::string> warnings_;
  torch::Tensor inv_freq_;
  int64_t head_slab_rows_ = 0;
  Progress progress_;
};

}  // namespace deltaedit::model
