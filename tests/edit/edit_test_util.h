// Helpers for the edit-op tests.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "edit/op.h"
#include "util/philox.h"

namespace deltaedit::edit::edit_test {

inline std::unique_ptr<Op> op(std::string_view spec) { return make_op(parse_op_spec(spec)); }

struct EditRun {
  std::vector<float> out;
  OpOutcome outcome;
};

inline EditRun run(const Op& o, std::vector<float> x, std::vector<int64_t> shape = {}, uint64_t seed = 1,
               std::string name = "t", uint32_t op_index = 0, std::span<const float> grad = {}) {
  if (shape.empty()) shape = {static_cast<int64_t>(x.size())};
  TensorContext ctx;
  ctx.name = name;
  ctx.shape = shape;
  ctx.seed = seed;
  ctx.op_index = op_index;
  ctx.grad = grad;
  EditRun r;
  r.outcome = o.apply(x, ctx);
  r.out = std::move(x);
  return r;
}

inline std::vector<float> edited(std::string_view spec, std::vector<float> x, std::vector<int64_t> shape = {},
                                uint64_t seed = 1, std::string name = "t", uint32_t op_index = 0) {
  return run(*op(spec), std::move(x), std::move(shape), seed, std::move(name), op_index).out;
}

// Gaussian values with standard deviation `scale` (a typical delta is ~1e-3).
inline std::vector<float> gaussian(size_t n, uint64_t seed, double scale = 1e-3) {
  const util::KeyedRng rng(seed, "test-data", 0);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(scale * rng.normal(i));
  return v;
}

inline bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace deltaedit::edit::edit_test
