// The generalized task-arithmetic family (MERGE.md §2.1): task_arithmetic, ties, dare_ties,
// dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear — one implementation, a table of
// (consensus, sparsifier, normalize default, rescale default, extra per-model parameter).
//
// With b the base and, for each other model i, τ_i = ⟦x_i − b⟧, τ̂_i = sparsify(τ_i),
// w̃_i = ⟦w_i⟧ and u_i = ⟦w̃_i·τ̂_i⟧, per element:
//   consensus sum (mergekit): γ = +1 if ⟦Σu_i⟧ ≥ 0 else −1; agreeing models A = {i: sign u_i = γ};
//     M = ⟦Σ_A u_i⟧, D = ⟦Σ_A w̃_i⟧ (0 → 1).
//   consensus sum (paper, TIES): γ = sign ⟦Σ τ̂_i⟧ (unweighted; 0 → +1, where the reference code
//     falls back to a tensor-wide sign sum — we keep the rule elementwise so that dare_ties
//     streams); A = {i: sign τ̂_i = γ}; M = ⟦Σ_A u_i⟧, D = |A| (0 → 1).
//   no consensus: M = ⟦Σu_i⟧, D = ⟦Σw̃_i⟧ (|D| < 1e-8 → 1).
//   normalize: M ← ⟦M/D⟧; λ ≠ 1: M ← ⟦λ·M⟧; output ⟦b + M⟧.
// Model sums run in config order in f32 (see method_impl.h).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "merge/method_impl.h"
#include "merge/sparsify.h"
#include "util/big_buffer.h"
#include "util/clones.h"

namespace deltaedit::merge::detail {
namespace {

enum class Consensus { None, Sum };
enum class Extra { None, Gamma, Epsilon };

struct Family {
  const char* name;
  const char* summary;
  Consensus consensus;
  Sparsifier sparsifier;
  bool normalize, rescale;
  Extra extra;
};

MethodInfo make_info(const Family& f) {
  using K = ParamSpec::Kind;
  MethodInfo info;
  info.name = f.name;
  info.summary = f.summary;
  info.needs_base = true;
  info.min_models = 1;
  info.random = f.sparsifier == Sparsifier::Random || f.sparsifier == Sparsifier::DellaMagprune;
  info.pointwise = f.sparsifier == Sparsifier::None;
  info.shape_rule = ShapeRule::CropEmbedToBaseSkipOthers;
  info.params.push_back({"weight", K::Number, true, std::nullopt, true, -1e300, 1e300,
                         "scale of this model's task vector (required except for the base)"});
  // mergekit declares density for the whole family (task_arithmetic accepts it and ignores it).
  info.params.push_back({"density", K::Number, true, 1.0, false, 0.0, 1.0,
                         f.sparsifier == Sparsifier::None
                             ? "accepted for compatibility; task_arithmetic does not sparsify"
                             : "fraction of this model's task vector kept (1 keeps all)"});
  if (f.extra == Extra::Gamma) {
    info.params.push_back({"gamma", K::Number, true, 0.01, false, 0.0, 1.0,
                           "fraction of largest-magnitude entries dropped as outliers"});
  }
  if (f.extra == Extra::Epsilon) {
    info.params.push_back({"epsilon", K::Number, true, 0.15, false, 0.0, 0.5,
                           "keep probabilities range over density ± epsilon by magnitude rank"});
  }
  info.params.push_back({"normalize", K::Bool, false, f.normalize ? 1.0 : 0.0, false, 0.0, 1.0,
                         "divide the merged delta by the sum of the (agreeing) weights"});
  info.params.push_back({"rescale", K::Bool, false, f.rescale ? 1.0 : 0.0, false, 0.0, 1.0,
                         "rescale survivors to keep the task vector's L1 norm (paper: 1/density)"});
  info.params.push_back({"lambda", K::Number, false, 1.0, false, -1e300, 1e300,
                         "scale of the merged delta before it is added to the base"});
  info.params.push_back({"int8_mask", K::Bool, false, 0.0, false, 0.0, 1.0,
                         "store masks as int8 (memory only; no effect on the result)"});
  return info;
}

struct CombineArgs {
  std::span<const float* const> tp;
  std::span<const float> w;
  float weight_sum = 1.0f, lambda = 1.0f;
  bool normalize = false, scale = false, consensus = false;
};

// acc[i] += t[i] eight lanes at a time (the compiler fuses the models' loops of the vote into
// one scalar loop otherwise). Returns the elements done (a multiple of 8).
[[gnu::always_inline]] inline size_t add_x8(float* acc, const float* t, size_t len) {
  using V = float __attribute__((vector_size(32)));
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    V a, x;
    std::memcpy(&a, acc + i, sizeof a);
    std::memcpy(&x, t + i, sizeof x);
    a += x;
    std::memcpy(acc + i, &a, sizeof a);
  }
  return i;
}

// The agreeing sums of combine_tiles for one model in the mergekit convention (u_i = τ̂_i held
// in t), eight lanes at a time in GCC's vector extension, which the compiler lowers to SSE2 or
// wider: its auto-vectoriser leaves the scalar loop below unvectorised in some instantiations.
// Per lane the operations are the scalar loop's: mixed += s & agree, divisor += w & agree,
// vote += 1 & agree. Returns the elements done (a multiple of 8).
[[gnu::always_inline]] inline size_t agree_sums_x8(const float* t, const uint32_t* positive,
                                                   float wm, float* mixed, float* divisor,
                                                   float* vote, size_t len) {
  using V = float __attribute__((vector_size(32)));
  using M = int32_t __attribute__((vector_size(32)));
  const V zero = {};
  const V wv = V{} + wm;
  const V one = V{} + 1.0f;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    V s, mx, dv, vt;
    M pos;
    std::memcpy(&s, t + i, sizeof s);
    std::memcpy(&pos, positive + i, sizeof pos);
    std::memcpy(&mx, mixed + i, sizeof mx);
    std::memcpy(&dv, divisor + i, sizeof dv);
    std::memcpy(&vt, vote + i, sizeof vt);
    const M agree = (pos & (s > zero)) | (~pos & (s < zero));
    mx += reinterpret_cast<V>(reinterpret_cast<M>(s) & agree);
    dv += reinterpret_cast<V>(reinterpret_cast<M>(wv) & agree);
    vt += reinterpret_cast<V>(reinterpret_cast<M>(one) & agree);
    std::memcpy(mixed + i, &mx, sizeof mx);
    std::memcpy(divisor + i, &dv, sizeof dv);
    std::memcpy(vote + i, &vt, sizeof vt);
  }
  return i;
}

// combine() in tiles: each step is one loop over the tile's elements (the models in the outer
// loop), so the compiler vectorises it; per element the operations and their order are those of
// the element-at-a-time rule in the file comment (sums start at +0 and run in config order).
template <bool kPaper, class R>
[[gnu::always_inline]] inline void combine_tiles(R rr, const CombineArgs& c, const float* b,
                                                 float* out, size_t n) {
  constexpr size_t kTile = 512;
  alignas(64) float mixed[kTile], divisor[kTile], vote[kTile];
  alignas(64) uint32_t positive[kTile];
  const size_t count = c.tp.size();
  for (size_t i0 = 0; i0 < n; i0 += kTile) {
    const size_t len = std::min(kTile, n - i0);
    for (size_t i = 0; i < len; ++i) mixed[i] = divisor[i] = 0.0f;
    if (c.consensus) {
      for (size_t i = 0; i < len; ++i) vote[i] = 0.0f;
      for (size_t m = 0; m < count; ++m) {
        const float* t = c.tp[m] + i0;
        for (size_t i = add_x8(vote, t, len); i < len; ++i) vote[i] += t[i];
      }
      for (size_t i = 0; i < len; ++i) {
        const float v = rr(vote[i]);
        positive[i] = (kPaper ? !(v < 0.0f) : v >= 0.0f) ? ~0u : 0u;
        vote[i] = 0.0f;  // from here: the count of agreeing models
      }
      // Branch-free: a model that does not agree adds +0, which changes no sum (the sums start
      // at +0 and so are never −0).
      for (size_t m = 0; m < count; ++m) {
        const float* t = c.tp[m] + i0;
        const float wm = c.w[m];
        size_t i = 0;
        if constexpr (!kPaper) i = agree_sums_x8(t, positive, wm, mixed, divisor, vote, len);
        for (; i < len; ++i) {
          // agree = positive ? s > 0 : s < 0, as a bit mask; x & mask is x or +0.
          const float s = t[i];
          const uint32_t gt = s > 0.0f ? ~0u : 0u, lt = s < 0.0f ? ~0u : 0u;
          const uint32_t agree = (positive[i] & gt) | (~positive[i] & lt);
          const float u = kPaper ? rr(wm * s) : s;
          mixed[i] += masked(u, agree);
          divisor[i] += masked(wm, agree);
          vote[i] += masked(1.0f, agree);
        }
      }
      for (size_t i = 0; i < len; ++i) {
        float d = kPaper ? vote[i] : rr(divisor[i]);
        divisor[i] = d == 0.0f ? 1.0f : d;
      }
    } else {
      for (size_t m = 0; m < count; ++m) {
        const float* t = c.tp[m] + i0;
        const float wm = c.w[m];
        for (size_t i = 0; i < len; ++i) mixed[i] += kPaper ? rr(wm * t[i]) : t[i];
      }
      for (size_t i = 0; i < len; ++i) divisor[i] = c.weight_sum;
    }
    const float* bi = b + i0;
    float* oi = out + i0;
    const float lambda = c.lambda;
    // One loop per (normalize, scale), without branches inside, so that each vectorises.
    const auto finish = [&](auto normalize, auto scale) {
      for (size_t i = 0; i < len; ++i) {
        float mx = rr(mixed[i]);
        if constexpr (decltype(normalize)::value) mx = rr(mx / divisor[i]);
        if constexpr (decltype(scale)::value) mx = rr(lambda * mx);
        oi[i] = rr(bi[i] + mx);
      }
    };
    using T = std::true_type;
    using F = std::false_type;
    if (c.normalize)
      c.scale ? finish(T{}, T{}) : finish(T{}, F{});
    else
      c.scale ? finish(F{}, T{}) : finish(F{}, F{});
  }
}

// The element loops above with an AVX2 clone (util/clones.h): each clone computes what the C++
// says, element by element, so the bytes are the same on every CPU.
DELTAEDIT_CLONES void combine_elements(bool paper, WorkType work, const CombineArgs& c,
                                       const float* b, float* out, size_t n) {
  with_rounding(work, [&](auto rr) DELTAEDIT_INLINE {
    if (paper)
      combine_tiles<true>(rr, c, b, out, n);
    else
      combine_tiles<false>(rr, c, b, out, n);
  });
}

// t[i] = ⟦x[i] − b[i]⟧ (τ of a block; t may be x).
DELTAEDIT_CLONES void task_vector(WorkType work, const float* x, const float* b, float* t,
                                  size_t n) {
  with_rounding(work, [&](auto rr) DELTAEDIT_INLINE {
    for (size_t i = 0; i < n; ++i) t[i] = rr(x[i] - b[i]);
  });
}

// t[i] = ⟦w·t[i]⟧ (u_i of a block in the mergekit convention).
DELTAEDIT_CLONES void weigh(WorkType work, float w, float* t, size_t n) {
  with_rounding(work, [&](auto rr) DELTAEDIT_INLINE {
    for (size_t i = 0; i < n; ++i) t[i] = rr(w * t[i]);
  });
}

class TaskArithmetic final : public MethodBase {
 public:
  explicit TaskArithmetic(const Family& f) : MethodBase(make_info(f)), f_(f) {}

  bool pointwise(const TensorJob& job) const override {
    const bool rescale = global(job, "rescale") != 0.0;
    for (const TensorInput& in : job.models) {
      if (!sparsify_pointwise(args(job, in, rescale))) return false;
    }
    return true;
  }

  void merge(const TensorJob& job, std::span<float> out,
             std::vector<std::string>& warnings) const override {
    const size_t n = out.size();
    if (!job.base) usage(job, "needs a base_model");
    check_sizes(job, n);
    if (n != numel(job.shape) && !pointwise(job)) {
      throw Error(ErrorKind::Unsupported,
                  prefix(job) + "this job needs the whole tensor, not a block", "",
                  std::string(job.name));
    }
    const Round r{job.work};
    const std::span<const float> b = job.base->values;
    if (job.models.empty()) {
      std::copy(b.begin(), b.end(), out.begin());
      return;
    }
    const bool paper = job.conventions == Conventions::Paper;
    const bool rescale = global(job, "rescale") != 0.0;
    const size_t count = job.models.size();

    // τ̂_i and w̃_i.
    std::vector<util::BigFloatBuffer> own(job.model_values_writable ? 0 : count);
    std::vector<std::span<float>> tau(count);
    std::vector<float> w(count);
    for (size_t m = 0; m < count; ++m) {
      const TensorInput& in = job.models[m];
      if (job.model_values_writable) {
        // τ_i replaces x_i in its scratch buffer, element by element (x_i is not read again).
        tau[m] = std::span<float>(const_cast<float*>(in.values.data()), n);
      } else {
        own[m].resize(n);
        tau[m] = own[m];
      }
      std::span<float> t = tau[m];
      task_vector(job.work, in.values.data(), b.data(), t.data(), n);
      if (job.edit_task_vector) {
        job.edit_task_vector(m, t);
        for (float& v : t) v = r(v);
      }
      sparsify(t, args(job, in, rescale), warnings);
      w[m] = r(static_cast<float>(per_model(job, in, "weight")));
    }
    const float weight_sum = sum_of_weights(job.work, w);
    // The mergekit convention votes with u_i: hold u_i in place of τ̂_i. The paper convention votes
    // with τ̂_i and forms u_i per element.
    if (!paper) {
      for (size_t m = 0; m < count; ++m) {
        weigh(job.work, w[m], tau[m].data(), n);
      }
    }
    std::vector<const float*> tp(count);
    for (size_t m = 0; m < count; ++m) tp[m] = tau[m].data();
    combine(job, tp, w, weight_sum, b.data(), out.data(), n);
  }

  std::optional<StreamPlan> stream_plan(const TensorJob& job) const override {
    if (!job.base || job.models.empty() || job.edit_task_vector) return std::nullopt;
    const bool rescale = global(job, "rescale") != 0.0;
    StreamPlan plan;
    for (const TensorInput& in : job.models) {
      const SparsifyArgs a = args(job, in, rescale);
      if (!SparsifyStream::supported(a)) return std::nullopt;
      plan.quantum = std::max(plan.quantum, SparsifyStream::quantum(a));
      plan.state_bytes += SparsifyStream::state_bytes(a);
    }
    return plan;
  }

  std::unique_ptr<MethodStream> stream(const TensorJob& job) const override;

  // ⟦Σ w̃_i⟧ in config order, with |·| < 1e-8 → 1 (the divisor without consensus).
  static float sum_of_weights(WorkType work, std::span<const float> w) {
    float weight_sum = 0.0f;
    for (float x : w) weight_sum += x;
    weight_sum = Round{work}(weight_sum);
    if (std::fabs(weight_sum) < 1e-8f) weight_sum = 1.0f;
    return weight_sum;
  }

  // The element loop over i < n: out[i] = ⟦b[i] + M⟧ from tp[m][i] (u_i in the mergekit
  // convention, τ̂_i in the paper one), compiled once per rounding rule (the same arithmetic as
  // Round{job.work}).
  void combine(const TensorJob& job, std::span<const float* const> tp, std::span<const float> w,
               float weight_sum, const float* b, float* out, size_t n) const {
    CombineArgs c;
    c.tp = tp;
    c.w = w;
    c.weight_sum = weight_sum;
    c.normalize = global(job, "normalize") != 0.0;
    const double lambda = global(job, "lambda");
    c.scale = lambda != 1.0;
    c.lambda = static_cast<float>(lambda);
    c.consensus = f_.consensus == Consensus::Sum;
    combine_elements(job.conventions == Conventions::Paper, job.work, c, b, out, n);
  }

 public:
  using MethodBase::global;
  using MethodBase::per_model;
  SparsifyArgs args(const TensorJob& job, const TensorInput& in, bool rescale) const {
    SparsifyArgs a;
    a.kind = f_.sparsifier;
    if (a.kind != Sparsifier::None) a.density = per_model(job, in, "density");
    if (f_.extra == Extra::Gamma) a.gamma = per_model(job, in, "gamma");
    if (f_.extra == Extra::Epsilon) a.epsilon = per_model(job, in, "epsilon");
    a.rescale = rescale;
    a.conventions = job.conventions;
    a.work = job.work;
    a.shape = job.shape;
    a.tensor = job.name;
    a.model = model_label(in);
    a.key = merge_key(job, in);
    a.first = job.first;
    a.threshold = in.magnitude_threshold;
    return a;
  }

 private:
  Family f_;
};

// The streamed job (MethodStream): one SparsifyStream per model; read passes form τ_i = ⟦x_i − b⟧
// of each block for the models still observing; the output pass forms τ̂_i and u_i of each block
// and runs the element loop of the whole-tensor merge on it.
class TaskArithmeticStream final : public MethodStream {
 public:
  TaskArithmeticStream(const TaskArithmetic& method, const TensorJob& job) : method_(method) {
    name_ = std::string(job.name);
    shape_.assign(job.shape.begin(), job.shape.end());
    job_.name = name_;
    job_.shape = shape_;
    job_.work = job.work;
    job_.is_embed = job.is_embed;
    job_.global = job.global;
    job_.conventions = job.conventions;
    job_.seed = job.seed;
    const Round r{job.work};
    const bool rescale = method.global(job, "rescale") != 0.0;
    for (const TensorInput& in : job.models) {
      SparsifyArgs a = method.args(job, in, rescale);
      a.first = 0;
      sparsify_.push_back(std::make_unique<SparsifyStream>(a, warnings_));
      w_.push_back(r(static_cast<float>(method.per_model(job, in, "weight"))));
    }
    weight_sum_ = TaskArithmetic::sum_of_weights(job.work, w_);
    tp_.resize(w_.size());
  }

  bool next_pass() override {
    bool more = false;
    for (auto& s : sparsify_) more |= s->next_pass();
    return more;
  }

  void observe(const TensorJob& block) override {
    if (!block.base) check(block, 0);  // throws: a task-vector block needs its base
    const size_t c = block.base->values.size();
    check(block, c);
    for (size_t m = 0; m < sparsify_.size(); ++m) {
      if (!sparsify_[m]->observing()) continue;
      // A selection pass reads only the keys of τ_m, formed on the fly.
      if (sparsify_[m]->observe_task_vector(block.models[m].values, block.base->values,
                                            block.first))
        continue;
      std::span<float> t = tau(block, m, c);
      sparsify_[m]->observe(t, block.first);
    }
  }

  void merge(const TensorJob& block, std::span<float> out,
             std::vector<std::string>& warnings) override {
    const size_t c = out.size();
    check(block, c);
    if (block.first == 0) {
      warnings.insert(warnings.end(), warnings_.begin(), warnings_.end());
    }
    const bool paper = job_.conventions == Conventions::Paper;
    for (size_t m = 0; m < sparsify_.size(); ++m) {
      std::span<float> t = tau(block, m, c);
      sparsify_[m]->apply(t, block.first);
      if (!paper) weigh(job_.work, w_[m], t.data(), t.size());
      tp_[m] = t.data();
    }
    method_.combine(job_, tp_, w_, weight_sum_, block.base->values.data(), out.data(), c);
  }

 private:
  void check(const TensorJob& block, size_t c) const {
    const auto bad = [&](const TensorInput& in) { return in.values.size() != c; };
    if (!block.base || block.models.size() != sparsify_.size() || bad(*block.base) ||
        std::any_of(block.models.begin(), block.models.end(), bad)) {
      throw Error(ErrorKind::Internal, "streamed merge: a block does not match the job", "", name_);
    }
  }
  // τ_m = ⟦x_m − b⟧ of the block, in the model's writable span or in a buffer of the stream.
  std::span<float> tau(const TensorJob& block, size_t m, size_t c) {
    std::span<float> t;
    if (block.model_values_writable) {
      t = std::span<float>(const_cast<float*>(block.models[m].values.data()), c);
    } else {
      own_.resize(sparsify_.size());
      own_[m].resize(c);
      t = own_[m];
    }
    task_vector(job_.work, block.models[m].values.data(), block.base->values.data(), t.data(), c);
    return t;
  }

  const TaskArithmetic& method_;
  std::string name_;
  std::vector<int64_t> shape_;
  TensorJob job_;  // the job's parameters (no values)
  std::vector<std::unique_ptr<SparsifyStream>> sparsify_;
  std::vector<float> w_;
  float weight_sum_ = 1.0f;
  std::vector<const float*> tp_;
  std::vector<std::vector<float>> own_;
  std::vector<std::string> warnings_;  // from the sparsifiers, written with the first block
};

std::unique_ptr<MethodStream> TaskArithmetic::stream(const TensorJob& job) const {
  if (!stream_plan(job)) return nullptr;
  return std::make_unique<TaskArithmeticStream>(*this, job);
}

constexpr Family kFamily[] = {
    {"task_arithmetic", "base + λ·Σ w_i·τ_i (task vectors τ_i = model − base)", Consensus::None,
     Sparsifier::None, false, false, Extra::None},
    {"ties", "TIES: trim each τ_i to its top-density magnitudes, elect signs, average agreeing",
     Consensus::Sum, Sparsifier::Magnitude, true, false, Extra::None},
    {"dare_ties", "DARE drop (keep ~ Bernoulli(density), rescale) + TIES sign consensus",
     Consensus::Sum, Sparsifier::Random, false, true, Extra::None},
    {"dare_linear", "DARE drop (keep ~ Bernoulli(density), rescale), weighted sum", Consensus::None,
     Sparsifier::Random, false, true, Extra::None},
    {"breadcrumbs",
     "drop the gamma largest and the smallest magnitudes, keep density; weighted sum",
     Consensus::None, Sparsifier::MagnitudeOutliers, false, false, Extra::Gamma},
    {"breadcrumbs_ties", "breadcrumbs sparsification + TIES sign consensus", Consensus::Sum,
     Sparsifier::MagnitudeOutliers, false, false, Extra::Gamma},
    {"della", "DELLA: magnitude-ranked keep probabilities density ± epsilon, TIES consensus",
     Consensus::Sum, Sparsifier::DellaMagprune, true, true, Extra::Epsilon},
    {"della_linear", "DELLA magnitude-ranked drop, weighted sum", Consensus::None,
     Sparsifier::DellaMagprune, false, true, Extra::Epsilon},
};

}  // namespace

std::unique_ptr<Method> make_task_arithmetic(std::string_view name) {
  for (const Family& f : kFamily) {
    if (name == f.name) return std::make_unique<TaskArithmetic>(f);
  }
  return nullptr;
}

}  // namespace deltaedit::merge::detail
