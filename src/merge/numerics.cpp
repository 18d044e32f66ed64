// round_to_work, parameter lookup, keyed draws and rank masks shared by the merge methods.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "io/convert.h"
#include "merge/method_impl.h"
#include "util/clones.h"

namespace deltaedit::merge {

float round_to_work(WorkType w, float x) noexcept {
  switch (w) {
    case WorkType::F32:
      return x;
    case WorkType::BF16:
      return io::bf16_to_f32(io::f32_to_bf16(x));
    case WorkType::F16:
      return io::f16_to_f32(io::f32_to_f16(x));
  }
  return x;
}

namespace detail {

uint64_t numel(std::span<const int64_t> shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d < 0 ? 0 : d);
  return n;
}

std::string model_label(const TensorInput& in) {
  return "model #" + std::to_string(in.model_index);
}

std::string format_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

const ParamSpec* find_param(const MethodInfo& info, std::string_view name) {
  for (const ParamSpec& p : info.params) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::string MethodBase::prefix(const TensorJob& job) const {
  return "merge_method " + info_.name + ", tensor '" + std::string(job.name) + "': ";
}

void MethodBase::usage(const TensorJob& job, const std::string& msg) const {
  throw Error(ErrorKind::Usage, prefix(job) + msg, "", std::string(job.name));
}

double MethodBase::global(const TensorJob& job, std::string_view name) const {
  if (auto it = job.global.find(std::string(name)); it != job.global.end()) return it->second;
  const ParamSpec* spec = find_param(info_, name);
  if (spec != nullptr && spec->default_value) return *spec->default_value;
  usage(job, "Missing required parameter " + std::string(name) + " (set it under parameters:)");
}

double MethodBase::per_model(const TensorJob& job, const TensorInput& in,
                             std::string_view name) const {
  if (auto v = per_model_opt(in, name)) return *v;
  usage(job, "Missing required parameter " + std::string(name) + " for " + model_label(in) +
                 " (set it under that model's parameters:)");
}

std::optional<double> MethodBase::per_model_opt(const TensorInput& in,
                                                std::string_view name) const {
  if (auto it = in.params.find(std::string(name)); it != in.params.end()) return it->second;
  const ParamSpec* spec = find_param(info_, name);
  if (spec != nullptr && spec->default_value) return *spec->default_value;
  return std::nullopt;
}

void MethodBase::check_sizes(const TensorJob& job, size_t n) const {
  const auto bad = [&](const TensorInput& in) {
    if (in.values.size() != n) {
      throw Error(ErrorKind::Format,
                  prefix(job) + model_label(in) + " has " + std::to_string(in.values.size()) +
                      " values, the output " + std::to_string(n),
                  "", std::string(job.name));
    }
  };
  if (job.base) bad(*job.base);
  for (const TensorInput& in : job.models) bad(in);
}

namespace {
// keep[j] = sel[j] & 1 (a selection mask as 0/1 bytes), with an AVX2 clone.
DELTAEDIT_CLONES void mask_to_bytes(const uint32_t* __restrict sel, uint8_t* __restrict keep,
                                    size_t n) {
  for (size_t j = 0; j < n; ++j) keep[j] = static_cast<uint8_t>(sel[j] & 1u);
}
}  // namespace

void draw_keep(util::PhiloxKey key, RandomPurpose purpose, uint64_t first, size_t n, double p,
               uint8_t* keep) {
  const uint64_t threshold = util::KeyedRng::uniform_threshold(std::clamp(p, 0.0, 1.0));
  const uint32_t lane = purpose_lane(purpose);
  // The batched Bernoulli draws (AVX-512 or AVX2 where the CPU has it): the scalar generator's
  // decisions, uniform(index, lane) < p.
  constexpr size_t kChunk = 1024;
  uint32_t sel[kChunk];
  for (size_t i = 0; i < n; i += kChunk) {
    const size_t take = std::min(kChunk, n - i);
    util::bernoulli_lane(key, first + i, lane, take, threshold, sel);
    mask_to_bytes(sel, keep + i, take);
  }
}

bool keep_one(util::PhiloxKey key, RandomPurpose purpose, uint64_t index, double p) {
  return util::KeyedRng(key).uniform(index, purpose_lane(purpose)) < p;
}

void keep_rank_range(std::span<const uint32_t> keys, uint64_t lo, uint64_t hi,
                     std::span<uint8_t> keep) {
  for_rank_range(
      keys.size(), lo, hi, [&](uint64_t i) { return keys[i]; },
      [&](uint64_t i, bool ok) { keep[i] = ok ? 1 : 0; });
}

}  // namespace detail
}  // namespace deltaedit::merge
