// Interim registry with linear, task_arithmetic and passthrough (MERGE.md §2.1, §2.3, §2.7) so the
// merge pipeline builds and runs before the full method set lands; replaced by registry.cpp.
#include <cmath>

#include "io/convert.h"
#include "merge/method.h"
#include "util/error.h"

namespace deltaedit::merge {

float round_to_work(WorkType w, float x) noexcept {
  switch (w) {
    case WorkType::BF16:
      return io::bf16_to_f32(io::f32_to_bf16(x));
    case WorkType::F16:
      return io::f16_to_f32(io::f32_to_f16(x));
    case WorkType::F32:
      break;
  }
  return x;
}

namespace {

ParamSpec weight_spec(bool required) {
  return {"weight", ParamSpec::Kind::Number, true, std::nullopt, required, -1e300,
          1e300,    "weight of the model"};
}

class Linear final : public Method {
 public:
  Linear() {
    info_.name = "linear";
    info_.summary = "weighted average of the models";
    info_.params = {weight_spec(true),
                    {"normalize", ParamSpec::Kind::Bool, false, 1.0, false, 0, 1,
                     "divide by the sum of weights"}};
    info_.min_models = 1;
    info_.pointwise = true;
    info_.shape_rule = ShapeRule::CropEmbedToMin;
  }
  const MethodInfo& info() const override { return info_; }
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    const WorkType w = job.work;
    float wsum = 0;
    for (const auto& m : job.models)
      wsum = round_to_work(w, wsum + round_to_work(w, float(m.params.at("weight"))));
    const bool norm = job.global.at("normalize") != 0;
    for (size_t i = 0; i < out.size(); ++i) {
      float acc = 0;
      for (const auto& m : job.models)
        acc = round_to_work(
            w,
            acc + round_to_work(w, round_to_work(w, float(m.params.at("weight"))) * m.values[i]));
      out[i] = norm ? round_to_work(w, acc / wsum) : acc;
    }
  }

 private:
  MethodInfo info_;
};

class TaskArithmetic final : public Method {
 public:
  TaskArithmetic() {
    info_.name = "task_arithmetic";
    info_.summary = "base + λ·Σ w_i (x_i − base)";
    info_.params = {
        weight_spec(true),
        {"density", ParamSpec::Kind::Number, true, 1.0, false, 0, 1, "fraction kept"},
        {"normalize", ParamSpec::Kind::Bool, false, 0.0, false, 0, 1,
         "divide by the sum of weights"},
        {"rescale", ParamSpec::Kind::Bool, false, 0.0, false, 0, 1, "L1 rescale"},
        {"lambda", ParamSpec::Kind::Number, false, 1.0, false, -1e300, 1e300,
         "scale of the merged delta"},
        {"int8_mask", ParamSpec::Kind::Bool, false, 0.0, false, 0, 1, "no numeric effect"}};
    info_.needs_base = true;
    info_.min_models = 1;
    info_.pointwise = true;
  }
  const MethodInfo& info() const override { return info_; }
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    const WorkType w = job.work;
    const auto& b = job.base->values;
    std::vector<std::vector<float>> taus;
    for (size_t k = 0; k < job.models.size(); ++k) {
      std::vector<float> t(out.size());
      for (size_t i = 0; i < out.size(); ++i)
        t[i] = round_to_work(w, job.models[k].values[i] - b[i]);
      if (job.edit_task_vector) job.edit_task_vector(k, t);
      taus.push_back(std::move(t));
    }
    float wsum = 0;
    for (const auto& m : job.models)
      wsum = round_to_work(w, wsum + round_to_work(w, float(m.params.at("weight"))));
    if (std::fabs(wsum) < 1e-8f) wsum = 1;
    const bool norm = job.global.at("normalize") != 0;
    const float lambda = float(job.global.at("lambda"));
    for (size_t i = 0; i < out.size(); ++i) {
      float acc = 0;
      for (size_t k = 0; k < taus.size(); ++k)
        acc = round_to_work(
            w, acc + round_to_work(w, round_to_work(w, float(job.models[k].params.at("weight"))) *
                                          taus[k][i]));
      if (norm) acc = round_to_work(w, acc / wsum);
      if (lambda != 1.0f) acc = round_to_work(w, lambda * acc);
      out[i] = round_to_work(w, b[i] + acc);
    }
  }

 private:
  MethodInfo info_;
};

class Passthrough final : public Method {
 public:
  Passthrough() {
    info_.name = "passthrough";
    info_.summary = "copies its single input (layer stacking with slices:)";
    info_.params = {{"scale", ParamSpec::Kind::Number, true, std::nullopt, false, -1e300, 1e300,
                     "multiply by this"}};
    info_.min_models = 1;
    info_.max_models = 1;
    info_.pointwise = true;
    info_.shape_rule = ShapeRule::Single;
  }
  const MethodInfo& info() const override { return info_; }
  void merge(const TensorJob& job, std::span<float> out, std::vector<std::string>&) const override {
    const auto& m = job.models.at(0);
    auto it = m.params.find("scale");
    for (size_t i = 0; i < out.size(); ++i)
      out[i] = it == m.params.end() ? m.values[i]
                                    : round_to_work(job.work, m.values[i] * float(it->second));
  }

 private:
  MethodInfo info_;
};

struct Registry {
  Linear linear;
  TaskArithmetic task_arithmetic;
  Passthrough passthrough;
};
const Registry& registry() {
  static const Registry r;
  return r;
}

}  // namespace

const Method* find_method(std::string_view name) {
  for (const auto* m : all_methods())
    if (m->info().name == name) return m;
  return nullptr;
}

std::vector<const Method*> all_methods() {
  const auto& r = registry();
  return {&r.linear, &r.task_arithmetic, &r.passthrough};
}

}  // namespace deltaedit::merge
