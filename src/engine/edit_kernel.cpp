#include "engine/edit_kernel.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/delta_blocks.h"
#include "io/convert.h"
#include "util/clones.h"
#include "util/error.h"

namespace deltaedit::engine {
namespace {

// d = p − b, and a copy of it in e (the ops edit e in place).
DELTAEDIT_CLONES void delta_and_copy(const float* __restrict p, const float* __restrict b,
                                     float* __restrict d, float* __restrict e, size_t c) {
  for (size_t i = 0; i < c; ++i) {
    const float x = p[i] - b[i];
    d[i] = x;
    e[i] = x;
  }
}

// Finite inputs, non-finite sum: w = b + e where b and q (the other input) are finite.
DELTAEDIT_CLONES uint64_t compose(const float* b, const float* e, const float* q, float* w,
                                  size_t c) {
  constexpr float kMax = std::numeric_limits<float>::max();
  uint32_t newly_bad = 0;
  for (size_t i = 0; i < c; ++i) {
    w[i] = b[i] + e[i];
    newly_bad += (std::fabs(w[i]) <= kMax ? 0u : 1u) & (std::fabs(b[i]) <= kMax ? 1u : 0u) &
                 (std::fabs(q[i]) <= kMax ? 1u : 0u);
  }
  return newly_bad;
}

void run_steps(const EditTensorState& st, size_t upto, float* e, size_t c, uint64_t at) {
  for (size_t s = 0; s < upto; ++s) {
    const auto& step = st.steps[s];
    if (step.observing != nullptr)
      step.observing->apply_observed(*step.state, std::span<float>(e, c), at, step.ctx);
    else
      step.pointwise->apply_block(std::span<float>(e, c), at, step.ctx);
  }
}

}  // namespace

void prepare_whole(EditTensorState& st, const OpChain& chain, const io::Checkpoint& base,
                   const io::TensorSource& post, const std::string& name,
                   const io::SafetensorsFile* grad) {
  st.whole = edit_tensor(chain, base, post, name, grad);
  st.ops = st.whole->applied;
}

void prepare_streamed(EditTensorState& st, const OpChain& chain, const io::Checkpoint& base,
                      const io::TensorSource& post, const std::string& name) {
  const auto& bi = base.info(name);
  const auto& pi = post.info(name);
  const uint64_t n = pi.numel();
  for (size_t k = 0; k < chain.ops.size(); ++k) {
    if (!chain.touches(k, name, pi.shape)) continue;
    const edit::Op& op = *chain.ops[k];
    EditTensorState::Step step{edit::as_pointwise(op), edit::as_observing(op),
                               chain.context(k, name, pi.shape), nullptr};
    if (step.pointwise == nullptr && step.observing == nullptr)
      throw Error(
          ErrorKind::Internal,
          "op '" + std::string(op.name()) + "' was planned as streamed but needs the whole tensor",
          "", name);
    st.steps.push_back(std::move(step));
    st.ops.push_back(std::string(chain.ops[k]->name()));
  }
  const uint64_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
  const auto release = [&](uint64_t off, uint64_t m) {
    base.release_range(name, off * bsz, m * bsz);
    post.release_range(name, off * psz, m * psz);
  };
  for (size_t k = 0; k < st.steps.size(); ++k) {
    if (st.steps[k].observing == nullptr) continue;
    const edit::ObservingOp& op = *st.steps[k].observing;
    auto state = op.observe_begin(st.steps[k].ctx);
    float e[kDeltaBlock];
    do {  // one pass for a two-pass op, as many as it asks for a multi-pass op
      for_each_delta_block(
          base.data(name), bi.dtype, post.data(name), pi.dtype, n,
          [&](uint64_t at, size_t c, const float* d) {
            if (k == 0) {  // no op before it: it observes Δ itself
              op.observe(*state, std::span<const float>(d, c), at);
              return;
            }
            std::copy(d, d + c, e);
            run_steps(st, k, e, c, at);
            op.observe(*state, std::span<const float>(e, c), at);
          },
          release);
    } while (op.observe_again(*state));
    op.observe_end(*state);
    st.steps[k].state = std::move(state);
  }
}

uint64_t edit_block(EditTensorState& st, std::span<const float> base, std::span<const float> post,
                    std::span<float> out, uint64_t at) {
  uint64_t bad = 0;
  float d[kDeltaBlock], scratch[kDeltaBlock];
  for (size_t k = 0; k < out.size(); k += kDeltaBlock) {
    const size_t c = std::min(kDeltaBlock, out.size() - k);
    const float* b = base.data() + k;
    const float* p = post.data() + k;
    const float* e;
    if (st.whole) {
      for (size_t i = 0; i < c; ++i) d[i] = p[i] - b[i];
      e = st.whole->edited.data() + at + k;
    } else {
      delta_and_copy(p, b, d, scratch, c);
      run_steps(st, st.steps.size(), scratch, c, at + k);
      e = scratch;
    }
    st.acc.add(std::span<const float>(d, c), std::span<const float>(e, c));
    bad += compose(b, e, p, out.data() + k, c);
  }
  return bad;
}

uint64_t edit_resized_block(EditTensorState& st, const io::Checkpoint& base,
                            const std::string& name, uint64_t shared, std::span<const float> post,
                            std::span<float> out, uint64_t at) {
  const uint64_t edited = at < shared ? std::min<uint64_t>(shared - at, out.size()) : 0;
  uint64_t bad = 0;
  if (edited) {
    const auto& bi = base.info(name);
    const uint64_t bsz = io::dtype_bits(bi.dtype) / 8;
    std::vector<float> b(edited);
    io::to_f32(base.data(name).subspan(at * bsz, edited * bsz), bi.dtype, b);
    bad = edit_block(st, b, post.first(edited), out.first(edited), at);
  }
  std::copy(post.begin() + std::ptrdiff_t(edited), post.end(),
            out.begin() + std::ptrdiff_t(edited));
  return bad;
}

uint64_t apply_block(std::span<const float> edited, std::span<const float> base,
                     std::span<float> out) {
  return compose(base.data(), edited.data(), edited.data(), out.data(), out.size());
}

}  // namespace deltaedit::engine
