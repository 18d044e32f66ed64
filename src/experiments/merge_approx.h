// A merge explained one expert at a time (MERGE.md §0 "Explaining a merge"): W_merge = W_i + D_i
// with D_i = W_merge − W_i, so on expert i's data ΔL_i = L_i(W_merge) − L_i(W_i) is compared with
// the approximation term (1/C) Σ_c ⟨∇L_i(W_i + t_c·D_i), D_i⟩ and its per-tensor contributions.
// The true ΔL_i is measured at W_merge itself (as `eval` of the merged checkpoint would).
// Shared by `approx --merge` and the M1 merge sweep; in memory or streamed (layer by layer), with
// the same numbers. D_i is formed from the stored tensors of both checkpoints, in f32.
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "io/tensor_source.h"
#include "merge/plan.h"
#include "model/evaluate.h"
#include "model/transformer.h"

namespace deltaedit::experiments {

struct MergeSources {
  const io::TensorSource& expert;  // W_i
  const io::TensorSource& merged;  // W_merge
  const io::TensorSource* base =
      nullptr;  // W_base: ‖W_i − W_base‖² is the intensity's ‖Δ‖² (none: 0)
};

// The tensors D_i covers: the expert's floating-point tensors. Throws Error(Usage) when the merge
// lacks one or holds it with another shape (e.g. a layer-stacking merge).
std::vector<std::string> merge_increment_names(const MergeSources& s);

// Before any tensor is read: the plan's output holds every floating-point tensor of `expert` with
// the same name and shape (else Error(Usage) naming the tensor).
void check_merge_shapes(const merge::MergePlan& plan, const io::TensorSource& expert);

// D_i of one tensor: W_merge − W_i in f32 (numel of the tensor); ‖W_i − W_base‖² (f64) into
// delta_sumsq when a base is given (else 0).
std::vector<float> merge_increment(const MergeSources& s, const std::string& name,
                                   double& delta_sumsq);

struct MergeApproxOptions {
  int steps = 5;
  model::Rule rule = model::Rule::Left;
  bool fisher = false;
};

// In memory: `expert_model` holds W_i (it is restored after).
model::ApproxResult merge_expert_approx(model::Model& expert_model, const MergeSources& s,
                                        const model::EvalSet& set, const MergeApproxOptions& o);
// Streamed: the expert's weights read unit by unit, D_i formed per tensor when reached.
model::ApproxResult merge_expert_approx_streamed(const MergeSources& s, const model::EvalSet& set,
                                                 const model::LoadOptions& load,
                                                 const MergeApproxOptions& o);

// The experts of a merge: the models its `models:` list (or its slices' sources) names, in config
// order, each once (a base named there too is an expert). `written` is the reference as the YAML
// first writes it.
struct MergeModel {
  size_t model = 0;  // index into MergePlan::models
  std::string written;
};
std::vector<MergeModel> merge_models(const merge::MergePlan& plan);

// The expert that `reference` names: the reference as written, or the same directory (and
// adapter) spelled otherwise. Throws Error(Usage) naming the valid references when none does.
size_t find_merge_model(const merge::MergePlan& plan, const std::vector<MergeModel>& experts,
                        const std::string& reference);

}  // namespace deltaedit::experiments
