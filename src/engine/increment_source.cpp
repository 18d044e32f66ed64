#include "engine/increment_source.h"

#include <algorithm>

#include "io/convert.h"
#include "io/pairing.h"
#include "util/error.h"

namespace deltaedit::engine {
namespace {
// Elements converted per block when Δ is recomputed (bounds the scratch memory).
constexpr uint64_t kBlock = uint64_t(1) << 20;
}  // namespace

IncrementSource::IncrementSource(const OpChain& chain, const io::Checkpoint& base,
                                 const io::TensorSource& post, const io::SafetensorsFile* grad)
    : chain_(chain), base_(base), post_(post), grad_(grad) {
  for (const auto& p : io::pair_tensors(base, post))
    if (p.status == io::PairStatus::Editable && chain.touches_any(p.name, post.info(p.name).shape))
      names_.push_back(p.name);
}

bool IncrementSource::edits(const std::string& name) const {
  return std::find(names_.begin(), names_.end(), name) != names_.end();
}

// Δ = f32(post) − f32(base) block by block; calls f(offset, count, delta).
template <class F>
static void for_each_delta(const io::Checkpoint& base, const io::TensorSource& post,
                           const std::string& name, F&& f) {
  const auto& bi = base.info(name);
  const auto& pi = post.info(name);
  const uint64_t n = pi.numel();
  const size_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
  const auto bd = base.data(name), pd = post.data(name);
  std::vector<float> b(std::min(n, kBlock)), q(b.size()), d(b.size());
  for (uint64_t at = 0; at < n; at += kBlock) {
    const uint64_t c = std::min(kBlock, n - at);
    io::to_f32(bd.subspan(at * bsz, c * bsz), bi.dtype, std::span(b.data(), c));
    io::to_f32(pd.subspan(at * psz, c * psz), pi.dtype, std::span(q.data(), c));
    for (uint64_t i = 0; i < c; ++i) d[i] = q[i] - b[i];
    f(at, c, d.data(), b.data(), q.data());
    base.release_range(name, at * bsz, c * bsz);
    post.release_range(name, at * psz, c * psz);
  }
}

util::BigFloatBuffer IncrementSource::increment(const std::string& name,
                                                double* delta_sumsq) const {
  if (!edits(name))
    throw Error(ErrorKind::Internal, "the edit does not change this tensor", "", name);
  auto te = edit_tensor(chain_, base_, post_, name, grad_);
  double sumsq = 0;
  const io::DType out = post_.info(name).dtype;
  // D = round_out(W_base + Δ') − W_post, as edit_increments (the checkpoint `edit` writes).
  for_each_delta(base_, post_, name, [&](uint64_t at, uint64_t c, const float* d, const float* b, const float* q) {
    float* e = te.edited.data() + at;
    for (uint64_t i = 0; i < c; ++i) {
      sumsq += double(d[i]) * double(d[i]);
      e[i] = b[i] + e[i];
    }
    round_to_output(std::span<float>(e, c), out);
    for (uint64_t i = 0; i < c; ++i) e[i] -= q[i];
  });
  base_.release(name);
  post_.release(name);
  if (delta_sumsq) *delta_sumsq = sumsq;
  return std::move(te.edited);
}

double IncrementSource::increment(const std::string& name, std::span<float> out) const {
  if (out.size() != post_.info(name).numel())
    throw Error(ErrorKind::Internal, "increment buffer does not match the tensor", "", name);
  double sumsq = 0;
  auto d = increment(name, &sumsq);
  std::copy(d.begin(), d.end(), out.begin());
  return sumsq;
}

double IncrementSource::delta_sumsq(const std::string& name) const {
  double sumsq = 0;
  for_each_delta(base_, post_, name, [&](uint64_t, uint64_t c, const float* d, const float*, const float*) {
    for (uint64_t i = 0; i < c; ++i) sumsq += double(d[i]) * double(d[i]);
  });
  base_.release(name);
  post_.release(name);
  return sumsq;
}

}  // namespace deltaedit::engine
