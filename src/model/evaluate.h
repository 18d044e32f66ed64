// Datasets on the model: batching, loss (causal LM or DPO), accuracy, gradients, and the
// approximation term of an edit (SPEC §1, §4).
#pragma once
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "model/gradients.h"
#include "model/loss.h"
#include "model/transformer.h"
#include "text/dataset.h"

namespace deltaedit::model {

// Right-padded batches of sequences (pad id 0 never attended to nor scored).
std::vector<Batch> make_batches(const std::vector<text::Sequence>& seqs, size_t batch_size);

enum class LossKind { CausalLM, DPO };

// A dataset ready for the model: the records, their batches, and for DPO the reference model's
// sequence log-probabilities (computed once).
struct EvalSet {
  LossKind kind = LossKind::CausalLM;
  double beta = 0.1;
  std::vector<text::Record> records;
  std::vector<Batch> batches;                           // CausalLM: one sequence per record
  std::vector<Batch> chosen, rejected;                  // DPO: parallel batches
  std::vector<torch::Tensor> ref_chosen, ref_rejected;  // DPO: [B] per batch
};
EvalSet make_eval_set(std::vector<text::Record> records, size_t batch_size, LossKind kind,
                      Model* reference = nullptr, double beta = 0.1);
// A DPO set whose reference log-probabilities come from `reference_logprobs`, called once with
// every sequence batch (the chosen batches, then the rejected ones) and returning each batch's
// [B] sequence log-probabilities in that order: a Model (make_eval_set) or a streamed walk.
using ReferenceLogprobs = std::function<std::vector<torch::Tensor>(const std::vector<Batch>&)>;
EvalSet make_dpo_eval_set(std::vector<text::Record> records, size_t batch_size, double beta,
                          const ReferenceLogprobs& reference_logprobs);

// Mean loss over the set (token-mean CE, or record-mean DPO), accumulated in f64.
double dataset_loss(Model& model, const EvalSet& set);
// Gradient of that mean loss for `names` (all parameters when empty), optional diagonal Fisher.
GradientResult dataset_gradients(Model& model, const EvalSet& set,
                                 const std::vector<std::string>& names = {}, bool fisher = false);

struct AccuracyResult {
  size_t examples = 0, correct = 0;
  double accuracy() const { return examples ? double(correct) / double(examples) : 0.0; }
  std::vector<std::string> outputs;  // generated text per example
  std::vector<std::vector<int32_t>> prompt_ids,
      output_ids;  // per example: the prompt and the greedy tokens
};
// Greedy decoding of each prompt/response record's response; GSM8K answer extraction.
AccuracyResult dataset_accuracy(Model& model, const text::Tokenizer& tok,
                                const std::vector<text::Record>& records, int64_t max_new_tokens);

enum class Rule { Left, Mid, Trapezoid };
Rule parse_rule(const std::string& s);

struct ApproxResult {
  double approximation_term = 0, true_delta_loss = 0, gap = 0;
  double loss_post = 0, loss_edit = 0, intensity = 0;
  std::optional<double> fisher_term;
  int steps = 0;
  Rule rule = Rule::Left;
  std::vector<double> nodes_t, nodes_value;  // ⟨∇L(W_post + t·D), D⟩ at each node
  std::vector<std::pair<std::string, double>> per_tensor;  // contributions; they sum to the total
  nlohmann::json to_json() const;
};

// Quadrature of ∫₀¹ f(t) dt where f(t) = Σ_tensors dots(t)[i]: nodes and weights of a rule with
// C intervals, and the per-tensor weighted sums (they add up to the total).
struct RiemannSum {
  std::vector<double> t, weight, node_value, per_tensor;
  double total = 0;
};
std::vector<std::pair<double, double>> quadrature_nodes(int steps, Rule rule);
RiemannSum riemann_sum(int steps, Rule rule, size_t tensors,
                       const std::function<std::vector<double>(double t)>& dots_at);

// The model must hold W_post; `increment` holds D = Δ' − Δ per parameter name (f32, parameter
// shape), `delta_sumsq` is ‖Δ‖² over the same tensors. The model is restored to W_post after.
ApproxResult approximation_term(Model& model, const EvalSet& set,
                                const std::map<std::string, std::vector<float>>& increment,
                                double delta_sumsq, int steps, Rule rule, bool fisher);

}  // namespace deltaedit::model
