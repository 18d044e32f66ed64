#include "engine/op_chain.h"

#include <algorithm>

#include "engine/delta_blocks.h"
#include "io/convert.h"
#include "io/pairing.h"
#include "util/error.h"

namespace deltaedit::engine {

using io::pair_tensors;
using io::PairStatus;
using nlohmann::json;

OpChain OpChain::build(const std::vector<std::string>& specs, uint64_t seed,
                       const std::string& include, const std::string& exclude) {
  OpChain c;
  c.seed = seed;
  if (specs.empty())
    throw Error(ErrorKind::Usage, "no --op given; see `deltaedit ops` for the list");
  for (const auto& s : specs) {
    auto spec = edit::parse_op_spec(s);
    c.ops.push_back(edit::make_op(spec));
    auto f = edit::name_filter(spec);
    c.filters.emplace_back(util::NameRegex(f.include, "op '" + spec.name + "' include"),
                           util::NameRegex(f.exclude, "op '" + spec.name + "' exclude"));
    c.specs.push_back(std::move(spec));
  }
  c.include = util::NameRegex(include, "--include");
  c.exclude = util::NameRegex(exclude, "--exclude");
  return c;
}

bool OpChain::needs_grad() const {
  return std::any_of(ops.begin(), ops.end(), [](const auto& o) { return o->needs_grad(); });
}

bool OpChain::touches(size_t i, const std::string& name, std::span<const int64_t> shape) const {
  return util::selected(include, exclude, name) &&
         util::selected(filters[i].first, filters[i].second, name) && ops[i]->applies_to(shape);
}

bool OpChain::touches_any(const std::string& name, std::span<const int64_t> shape) const {
  for (size_t i = 0; i < ops.size(); ++i)
    if (touches(i, name, shape)) return true;
  return false;
}

edit::TensorContext OpChain::context(size_t i, std::string_view name,
                                     std::span<const int64_t> shape) const {
  edit::TensorContext ctx;
  ctx.name = name;
  ctx.shape = shape;
  ctx.seed = seed;
  ctx.op_index = uint32_t(i);
  return ctx;
}

json OpChain::describe() const {
  json a = json::array();
  for (size_t i = 0; i < ops.size(); ++i)
    a.push_back({{"op", std::string(ops[i]->name())}, {"params", ops[i]->params()}});
  return a;
}

void round_to_output(std::span<float> w, io::DType out) {
  if (out == io::DType::F32 || !io::is_compute_dtype(out)) return;
  std::vector<std::byte> rounded(w.size() * (io::dtype_bits(out) / 8));
  io::from_f32(w, out, rounded);
  io::to_f32(rounded, out, w);
}

TensorEdit edit_tensor(const OpChain& chain, const io::Checkpoint& base,
                       const io::TensorSource& post, const std::string& name,
                       const io::SafetensorsFile* grad) {
  const auto& bi = base.info(name);
  const auto& pi = post.info(name);
  // A resized tensor (post has rows added) is edited on the rows it shares with base: the first
  // base.numel() elements of both (rows are contiguous).
  const bool resized = io::rows_added(bi.shape, pi.shape);
  const std::vector<int64_t>& shape = resized ? bi.shape : pi.shape;
  const uint64_t n = resized ? bi.numel() : pi.numel();
  TensorEdit te;
  te.edited.resize(n);
  {
    const size_t bsz = io::dtype_bits(bi.dtype) / 8, psz = io::dtype_bits(pi.dtype) / 8;
    for_each_delta_block(
        base.data(name), bi.dtype, post.data(name), pi.dtype, n,
        [&](uint64_t at, size_t c, const float* d) {
          std::copy(d, d + c, te.edited.data() + at);
        },
        // The inputs are read again (from the page cache) when the output is composed;
        // meanwhile their pages need not stay mapped while the ops run.
        [&](uint64_t off, uint64_t m) {
          base.release_range(name, off * bsz, m * bsz);
          post.release_range(name, off * psz, m * psz);
        });
  }
  std::vector<float> g;
  for (size_t i = 0; i < chain.ops.size(); ++i) {
    io::check_interrupted();
    if (!chain.touches(i, name, shape)) continue;
    edit::TensorContext ctx = chain.context(i, name, shape);
    if (chain.ops[i]->needs_grad()) {
      if (g.empty()) {
        const auto* gi = grad ? grad->header().find(name) : nullptr;
        if (!gi || gi->numel() != n)
          throw Error(ErrorKind::Usage, "the gradient file has no gradient of this shape",
                      grad ? grad->path().string() : "", name);
        g.resize(n);
        io::to_f32(grad->data(*gi), gi->dtype, g);
      }
      ctx.grad = g;
    }
    auto outcome = chain.ops[i]->apply(te.edited, ctx);
    if (!outcome.touched) continue;
    te.applied.push_back(std::string(chain.ops[i]->name()));
    te.factors = std::move(outcome.factors);
  }
  return te;
}

Increments edit_increments(const OpChain& chain, const io::Checkpoint& base,
                           const io::TensorSource& post, const io::SafetensorsFile* grad) {
  Increments inc;
  for (const auto& p : pair_tensors(base, post)) {
    if (p.status != PairStatus::Editable || !chain.touches_any(p.name, post.info(p.name).shape))
      continue;
    auto te = edit_tensor(chain, base, post, p.name, grad);
    const auto& bi = base.info(p.name);
    const auto& pi = post.info(p.name);
    std::vector<float> b(pi.numel()), q(pi.numel());
    io::to_f32(base.data(p.name), bi.dtype, b);
    io::to_f32(post.data(p.name), pi.dtype, q);
    for (size_t i = 0; i < q.size(); ++i) {
      const float delta = q[i] - b[i];
      inc.delta_sumsq += double(delta) * double(delta);
      te.edited[i] = b[i] + te.edited[i];  // W' before rounding, as the writer forms it
    }
    // W' in the output dtype (post's), back in f32, minus W_post.
    round_to_output(std::span<float>(te.edited.data(), q.size()), pi.dtype);
    for (size_t i = 0; i < q.size(); ++i) te.edited[i] -= q[i];
    inc.d[p.name].assign(te.edited.begin(), te.edited.end());
    post.release(p.name);
  }
  return inc;
}

}  // namespace deltaedit::engine
