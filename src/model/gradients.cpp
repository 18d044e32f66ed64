#include "model/gradients.h"

#include <cmath>

#include "util/error.h"

namespace deltaedit::model {
namespace {
// Restores requires_grad flags when leaving scope, also on exceptions.
class GradFlagsGuard {
 public:
  explicit GradFlagsGuard(Model& m) : m_(m) {
    for (const auto& n : m.param_names()) flags_.push_back(m.param(n).requires_grad());
  }
  ~GradFlagsGuard() {
    const auto& names = m_.param_names();
    for (size_t i = 0; i < names.size(); ++i) {
      auto& t = m_.param(names[i]);
      t.mutable_grad() = torch::Tensor();
      t.requires_grad_(flags_[i]);
    }
  }
  GradFlagsGuard(const GradFlagsGuard&) = delete;
  GradFlagsGuard& operator=(const GradFlagsGuard&) = delete;

 private:
  Model& m_;
  std::vector<bool> flags_;
};

NamedGradient to_named(const torch::Tensor& acc) {
  NamedGradient g;
  g.shape = acc.sizes().vec();
  auto f = acc.to(torch::kCPU, torch::kFloat32).contiguous();
  g.values.assign(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  return g;
}
}  // namespace

GradientResult accumulate_gradients(Model& model, size_t n_batches, const BatchLossFn& batch_loss,
                                    const GradientOptions& options) {
  std::vector<std::string> names = options.names.empty() ? model.param_names() : options.names;
  for (const auto& n : names)
    if (!model.has_param(n)) throw Error(ErrorKind::Usage, "the model has no such parameter", {}, n);

  GradFlagsGuard guard(model);
  torch::AutoGradMode grad_on(true);
  model.set_requires_grad(true);
  std::vector<torch::Tensor> acc(names.size()), fisher(names.size());
  GradientResult r;
  for (size_t b = 0; b < n_batches; ++b) {
    model.zero_grad();
    TokenLoss l = batch_loss(model, b);
    if (l.count < 0) throw Error(ErrorKind::Internal, "a batch reported a negative count");
    if (l.count == 0) continue;
    if (!l.sum.defined() || l.sum.numel() != 1) throw Error(ErrorKind::Internal, "a batch loss must be a scalar");
    const double s = l.sum.item<double>();
    if (!std::isfinite(s))
      throw Error(ErrorKind::Numeric, "the loss of batch " + std::to_string(b) + " is not finite");
    l.sum.backward();
    r.loss_sum += s;
    r.count += l.count;
    ++r.batches;
    for (size_t i = 0; i < names.size(); ++i) {
      const auto& g = model.param(names[i]).grad();
      auto g64 = g.defined() ? g.to(torch::kFloat64) : torch::zeros(model.param(names[i]).sizes(),
                                                                    model.param(names[i]).options().dtype(torch::kFloat64));
      acc[i] = acc[i].defined() ? acc[i].add_(g64) : g64.clone();
      if (options.fisher) {
        auto sq = (g64 / double(l.count)).square();
        fisher[i] = fisher[i].defined() ? fisher[i].add_(sq) : sq;
      }
    }
  }
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& p = model.param(names[i]);
    if (r.count == 0) {
      r.grads[names[i]] = to_named(torch::zeros(p.sizes(), torch::kFloat64));
      if (options.fisher) r.fisher[names[i]] = to_named(torch::zeros(p.sizes(), torch::kFloat64));
      continue;
    }
    r.grads[names[i]] = to_named(acc[i] / double(r.count));
    if (options.fisher) r.fisher[names[i]] = to_named(fisher[i] / double(r.batches));
  }
  return r;
}

GradientResult lm_gradients(Model& model, const std::vector<Batch>& batches, const GradientOptions& options) {
  return accumulate_gradients(
      model, batches.size(),
      [&](Model& m, size_t i) {
        const Batch& b = batches[i];
        return causal_lm_loss_sum(m.forward(b.input_ids, b.attention_mask), b);
      },
      options);
}

}  // namespace deltaedit::model
