#include "experiments/merge_approx.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <map>

#include "io/convert.h"
#include "io/dtype.h"
#include "model/streamed.h"
#include "util/error.h"

namespace deltaedit::experiments {
namespace {

void read_f32(const io::TensorSource& src, const std::string& name, std::span<float> out) {
  io::to_f32(src.data(name), src.info(name).dtype, out);
  src.release(name);
}

// The true ΔL_i at W_merge itself: the path's end W_i + fl(W_merge − W_i) can differ from W_merge
// by one rounding per weight, which moves the loss by about 1e-7 relative.
model::ApproxResult& ending_at_the_merge(model::ApproxResult& r, double loss_merge) {
  r.loss_edit = loss_merge;
  r.true_delta_loss = r.loss_edit - r.loss_post;
  r.gap = r.true_delta_loss - r.approximation_term;
  return r;
}

}  // namespace

std::vector<std::string> merge_increment_names(const MergeSources& s) {
  std::vector<std::string> names;
  for (const auto& n : s.expert.names()) {
    const auto& e = s.expert.info(n);
    if (!io::is_float_dtype(e.dtype)) continue;
    if (!s.merged.contains(n))
      throw Error(ErrorKind::Usage,
                  "the merge has no tensor of this name, so it is not W_i + D_i of the expert "
                  "(a layer-stacking merge?)",
                  s.expert.path().string(), n);
    if (s.merged.info(n).shape != e.shape)
      throw Error(ErrorKind::Usage,
                  "the merge holds this tensor with another shape than the expert",
                  s.expert.path().string(), n);
    names.push_back(n);
  }
  return names;
}

void check_merge_shapes(const merge::MergePlan& plan, const io::TensorSource& expert) {
  std::map<std::string_view, const std::vector<int64_t>*> out;
  for (const auto& t : plan.tensors) out[t.name] = &t.shape;
  for (const auto& n : expert.names()) {
    const auto& e = expert.info(n);
    if (!io::is_float_dtype(e.dtype)) continue;
    const auto it = out.find(n);
    if (it == out.end() || *it->second != e.shape)
      throw Error(
          ErrorKind::Usage,
          it == out.end()
              ? "the merge writes no tensor of this name, so it is not W_i + D_i of this model "
                "(a layer-stacking merge?)"
              : "the merge writes this tensor with another shape than the model holds",
          expert.path().string(), n);
  }
}

std::vector<float> merge_increment(const MergeSources& s, const std::string& name,
                                   double& delta_sumsq) {
  const size_t numel = s.expert.info(name).numel();
  std::vector<float> d(numel), w(numel);
  read_f32(s.merged, name, d);
  read_f32(s.expert, name, w);
  for (size_t i = 0; i < numel; ++i) d[i] -= w[i];
  delta_sumsq = 0;
  if (s.base && s.base->contains(name) && s.base->info(name).shape == s.expert.info(name).shape) {
    std::vector<float> b(numel);
    read_f32(*s.base, name, b);
    for (size_t i = 0; i < numel; ++i) {
      const double t = double(w[i]) - double(b[i]);
      delta_sumsq += t * t;
    }
  }
  return d;
}

model::ApproxResult merge_expert_approx(model::Model& expert_model, const MergeSources& s,
                                        const model::EvalSet& set, const MergeApproxOptions& o) {
  std::map<std::string, std::vector<float>> d;
  double delta_sumsq = 0;
  for (const auto& n : merge_increment_names(s)) {
    double dss = 0;
    d[n] = merge_increment(s, n, dss);
    delta_sumsq += dss;
  }
  auto r = model::approximation_term(expert_model, set, d, delta_sumsq, o.steps, o.rule, o.fisher);
  const auto saved = expert_model.state();
  std::vector<float> w;
  for (const auto& [n, unused] : d) {
    if (!expert_model.has_param(n)) continue;  // a tied lm_head
    w.resize(s.merged.info(n).numel());
    read_f32(s.merged, n, w);
    expert_model.set_(n, std::span<const float>(w));
  }
  const double loss_merge = model::dataset_loss(expert_model, set);
  expert_model.load_state(saved);
  return ending_at_the_merge(r, loss_merge);
}

model::ApproxResult merge_expert_approx_streamed(const MergeSources& s, const model::EvalSet& set,
                                                 const model::LoadOptions& load,
                                                 const MergeApproxOptions& o) {
  model::StreamedModel sm(s.expert, load);
  model::StreamedEdit se;
  se.names = merge_increment_names(s);
  se.increment = [&](const std::string& n, double& dss) {
    auto v = merge_increment(s, n, dss);
    return torch::from_blob(v.data(), {int64_t(v.size())}, torch::kFloat32).clone();
  };
  se.delta_sumsq = [&](const std::string& n) {
    double dss = 0;
    merge_increment(s, n, dss);
    return dss;
  };
  auto r = sm.approximation_term(set, se, o.steps, o.rule, o.fisher);
  return ending_at_the_merge(r, model::StreamedModel(s.merged, load).loss(set));
}

std::vector<MergeModel> merge_models(const merge::MergePlan& plan) {
  std::map<std::string, size_t> by_key;
  for (size_t i = 0; i < plan.models.size(); ++i)
    by_key[merge::model_key({plan.models[i].dir, 0, plan.models[i].lora})] = i;
  std::vector<MergeModel> out;
  auto add = [&](const merge::ModelRef& r) {
    const auto it = by_key.find(merge::model_key(r));
    if (it == by_key.end())
      throw Error(ErrorKind::Internal, "a model of the config is not in its plan", r.text());
    for (const auto& e : out)
      if (e.model == it->second) return;
    out.push_back({it->second, r.text()});
  };
  const auto& c = plan.config;
  if (!c.uses_slices)
    for (const auto& m : c.models) add(m.model);
  else
    for (const auto& sl : c.slices)
      for (const auto& m : sl.sources) add(m.model);
  return out;
}

size_t find_merge_model(const merge::MergePlan& plan, const std::vector<MergeModel>& experts,
                        const std::string& reference) {
  for (size_t i = 0; i < experts.size(); ++i)
    if (experts[i].written == reference || plan.models[experts[i].model].path == reference)
      return i;
  const std::string key = merge::model_key({reference, 0, ""});
  for (size_t i = 0; i < experts.size(); ++i) {
    const auto& m = plan.models[experts[i].model];
    if (m.lora.empty() && merge::model_key({m.dir, 0, ""}) == key) return i;
  }
  std::vector<std::string> valid;
  for (const auto& e : experts) valid.push_back("'" + e.written + "'");
  throw Error(
      ErrorKind::Usage,
      fmt::format("--data {}=...: '{}' is not a model of the merge config; its models are {}",
                  reference, reference, fmt::join(valid, ", ")),
      plan.config.file);
}

}  // namespace deltaedit::experiments
