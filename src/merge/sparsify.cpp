// Sparsifiers of the task-vector family (MERGE.md §2.2, §3); see sparsify.h.
#include "merge/sparsify.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "merge/method_impl.h"
#include "util/big_buffer.h"

namespace deltaedit::merge::detail {
namespace {

[[noreturn]] void usage(const SparsifyArgs& a, const std::string& msg) {
  throw Error(ErrorKind::Usage, "tensor '" + std::string(a.tensor) + "', " + a.model + ": " + msg,
              "", std::string(a.tensor));
}

std::string warn_prefix(const SparsifyArgs& a) {
  return "tensor '" + std::string(a.tensor) + "', " + a.model + ": ";
}

// mergekit's rescale_sum: τ⊙mask scaled by ⟦B/A⟧ (rounded in `w`).
void l1_rescale(std::span<float> tau, std::span<const uint8_t> keep, WorkType w) {
  const Round r{w};
  const size_t n = tau.size();
  const float b =
      tensor_sum(w, n, [&](size_t i) { return std::fabs(static_cast<double>(tau[i])); });
  const float a = tensor_sum(
      w, n, [&](size_t i) { return keep[i] ? std::fabs(static_cast<double>(tau[i])) : 0.0; });
  const bool scale = !(b < 1e-7f) && !(a < 1e-7f);
  const float ratio = scale ? r(b / a) : 1.0f;
  for (size_t i = 0; i < n; ++i) tau[i] = keep[i] ? (scale ? r(tau[i] * ratio) : tau[i]) : 0.0f;
}

void apply_mask(std::span<float> tau, std::span<const uint8_t> keep) {
  for (size_t i = 0; i < tau.size(); ++i) tau[i] = keep[i] ? tau[i] : 0.0f;
}

// Keeps the entries whose rank by key lies in [lo, hi) (for_rank_range), zeroing the others in
// place, or through a mask when the survivors are rescaled.
template <class Key>
void mask_rank_range(std::span<float> tau, uint64_t lo, uint64_t hi, const Key& key,
                     const SparsifyArgs& a) {
  if (!a.rescale) {
    for_rank_range(tau.size(), lo, hi, key,
                   [&](uint64_t i, bool ok) { tau[i] = ok ? tau[i] : 0.0f; });
    return;
  }
  std::vector<uint8_t> keep(tau.size());
  for_rank_range(tau.size(), lo, hi, key, [&](uint64_t i, bool ok) { keep[i] = ok ? 1 : 0; });
  l1_rescale(tau, keep, a.work);
}

// Rows of della: shape [d0, d1, rest...] is d0·rest vectors of length d1 (stride rest); a 1-D
// tensor or a scalar is one row.
struct Rows {
  uint64_t outer = 1, len = 1, stride = 1;
};
Rows della_rows(std::span<const int64_t> shape, uint64_t n) {
  Rows r;
  if (shape.size() < 2) {
    r.len = n;
    return r;
  }
  r.outer = static_cast<uint64_t>(shape[0]);
  r.len = static_cast<uint64_t>(shape[1]);
  r.stride = n / std::max<uint64_t>(1, r.outer * r.len);
  return r;
}

void della(std::span<float> tau, const SparsifyArgs& a, std::vector<std::string>& warnings) {
  const uint64_t n = tau.size();
  const double d = a.density, eps = a.epsilon;
  if (!(d - eps > 0.0) || !(d + eps < 1.0)) {
    const std::string msg = "della needs density ± epsilon inside (0, 1); density " +
                            format_number(d) + ", epsilon " + format_number(eps) + " give [" +
                            format_number(d - eps) + ", " + format_number(d + eps) + "]";
    if (a.conventions == Conventions::Mergekit) usage(a, msg + "; lower epsilon or move density");
    warnings.push_back(warn_prefix(a) + msg + " (paper convention: probabilities are clamped)");
  }
  const bool paper = a.conventions == Conventions::Paper;
  const Round r{a.work};
  const Rows rows = della_rows(a.shape, n);
  if (rows.len > 0xFFFFFFFFull) {
    throw Error(ErrorKind::Unsupported, warn_prefix(a) + "della ranks rows of at most 2^32 entries",
                "", std::string(a.tensor));
  }
  // Keep probability and survivor scale of each rank (the same in every row).
  const double m = paper ? static_cast<double>(rows.len) : r(static_cast<float>(rows.len));
  std::vector<uint64_t> threshold(rows.len);
  std::vector<float> inv_q(rows.len);
  for (uint64_t k = 0; k < rows.len; ++k) {
    const double rank = paper ? static_cast<double>(k + 1) : r(static_cast<float>(k + 1));
    const double norm = rows.len == 1 ? 0.5 : std::clamp((rank - 1.0) / (m - 1.0), 0.0, 1.0);
    double q = std::clamp((d - eps) + 2.0 * eps * norm, 0.0, 1.0);
    if (!paper) q = r(static_cast<float>(q));
    threshold[k] = util::KeyedRng::uniform_threshold(q);
    inv_q[k] = static_cast<float>(q > 0.0 ? 1.0 / q : 0.0);
  }
  const bool short_rows = rows.len == 1 && n > 0;
  // Rank of every element in its row, stable by |τ| (equal keys by position): an LSD radix sort
  // of the row's keys by bytes, skipping the bytes all keys share (the low half in bf16).
  std::vector<uint32_t, util::BigBufferAllocator<uint32_t>> rank_of;
  rank_of.resize(n);
  std::vector<uint32_t> key(rows.len), idx(rows.len), key2(rows.len), idx2(rows.len);
  for (uint64_t o = 0; o < rows.outer; ++o) {
    for (uint64_t s = 0; s < rows.stride; ++s) {
      const uint64_t base = o * rows.len * rows.stride + s;
      uint32_t any = 0, all = ~0u;
      for (uint64_t j = 0; j < rows.len; ++j) {
        key[j] = abs_key(tau[base + j * rows.stride]);
        idx[j] = static_cast<uint32_t>(j);
        any |= key[j];
        all &= key[j];
      }
      for (unsigned shift = 0; shift < 32; shift += 8) {
        if ((((any ^ all) >> shift) & 0xFFu) == 0) continue;  // one value: the order stays
        uint64_t count[257] = {};
        for (uint64_t j = 0; j < rows.len; ++j) ++count[((key[j] >> shift) & 0xFFu) + 1];
        for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
        for (uint64_t j = 0; j < rows.len; ++j) {
          const uint64_t at = count[(key[j] >> shift) & 0xFFu]++;
          key2[at] = key[j];
          idx2[at] = idx[j];
        }
        key.swap(key2);
        idx.swap(idx2);
      }
      for (uint64_t k = 0; k < rows.len; ++k) {
        rank_of[base + uint64_t{idx[k]} * rows.stride] = static_cast<uint32_t>(k);
      }
    }
  }
  // keep[i] = uniform(i, DellaKeep lane) < q(rank of i), drawn kPhiloxBatch counters at a time.
  std::vector<uint8_t> keep(n);
  const uint32_t lane = purpose_lane(RandomPurpose::DellaKeep);
  for (uint64_t i = 0; i < n; i += util::kPhiloxBatch) {
    uint32_t w0[util::kPhiloxBatch], w1[util::kPhiloxBatch];
    util::philox4x32_10_w01(a.key, i, lane, w0, w1);
    const uint64_t take = std::min<uint64_t>(util::kPhiloxBatch, n - i);
    for (uint64_t j = 0; j < take; ++j) {
      keep[i + j] = util::KeyedRng::uniform_bits(w0[j], w1[j]) < threshold[rank_of[i + j]] ? 1 : 0;
    }
  }
  if (short_rows) {
    warnings.push_back(
        warn_prefix(a) +
        "della ranks rows of length 1 (mergekit gives NaN there); they are kept with "
        "probability density " +
        format_number(d));
  }
  if (!a.rescale) return apply_mask(tau, keep);
  if (!paper) return l1_rescale(tau, keep, a.work);
  for (uint64_t i = 0; i < n; ++i)
    tau[i] =
        keep[i] ? r(static_cast<float>(static_cast<double>(tau[i]) * inv_q[rank_of[i]])) : 0.0f;
}

}  // namespace

bool sparsify_pointwise(const SparsifyArgs& a) {
  switch (a.kind) {
    case Sparsifier::None:
      return true;
    case Sparsifier::Magnitude:
      if (a.threshold) return !a.rescale;
      return a.density >= 1.0;
    case Sparsifier::Random:
      return a.density >= 1.0 || !a.rescale || a.conventions == Conventions::Paper;
    case Sparsifier::MagnitudeOutliers:
      return a.density >= 1.0;
    case Sparsifier::DellaMagprune:
      return a.density >= 1.0 || a.density <= 0.0;
  }
  return false;
}

void sparsify(std::span<float> tau, const SparsifyArgs& a, std::vector<std::string>& warnings) {
  const uint64_t n = tau.size();
  const bool paper = a.conventions == Conventions::Paper;
  const double d = a.density;
  if (a.kind == Sparsifier::None) return;
  if (a.kind == Sparsifier::Magnitude && a.threshold) {
    std::vector<uint8_t> keep(n);
    const uint32_t t = abs_key(*a.threshold);
    for (uint64_t i = 0; i < n; ++i) keep[i] = abs_key(tau[i]) >= t && !std::isnan(tau[i]) ? 1 : 0;
    return a.rescale ? l1_rescale(tau, keep, a.work) : apply_mask(tau, keep);
  }
  if (d >= 1.0) return;
  switch (a.kind) {
    case Sparsifier::None:
      return;
    case Sparsifier::Magnitude: {
      const uint64_t k = static_cast<uint64_t>(std::max(0.0, d * static_cast<double>(n)));
      if (k == 0) {
        const std::string msg = "density " + format_number(d) +
                                " keeps int(density·n) = 0 of the " + std::to_string(n) +
                                " entries";
        if (!paper)
          usage(a, msg + " (mergekit fails here); raise density to at least " +
                       format_number(1.0 / static_cast<double>(std::max<uint64_t>(n, 1))));
        warnings.push_back(warn_prefix(a) + msg + "; its task vector is zeroed");
        std::fill(tau.begin(), tau.end(), 0.0f);
        return;
      }
      // Descending |τ|, lower index first.
      const auto key = [&](uint64_t i) { return ~abs_key(tau[i]); };
      return mask_rank_range(tau, 0, k, key, a);
    }
    case Sparsifier::Random: {
      std::vector<uint8_t> keep(n);
      // mergekit draws Bernoulli(d) in W when W is bf16, in f32 otherwise (on the CPU).
      const double p =
          paper ? d
                : (a.work == WorkType::BF16 ? round_to_work(WorkType::BF16, static_cast<float>(d))
                                            : static_cast<float>(d));
      draw_keep(a.key, RandomPurpose::DareKeep, a.first, n, p, keep.data());
      if (!a.rescale) return apply_mask(tau, keep);
      if (!paper) {
        // On the CPU mergekit rescales f16 tensors in f32 and casts the result back.
        l1_rescale(tau, keep, a.work == WorkType::F16 ? WorkType::F32 : a.work);
        if (a.work == WorkType::F16) {
          for (float& x : tau) x = round_to_work(WorkType::F16, x);
        }
        return;
      }
      const Round r{a.work};
      const double inv = d > 0.0 ? 1.0 / d : 0.0;
      for (uint64_t i = 0; i < n; ++i)
        tau[i] = keep[i] ? r(static_cast<float>(tau[i] * inv)) : 0.0f;
      return;
    }
    case Sparsifier::MagnitudeOutliers: {
      const auto dn = static_cast<double>(n);
      const int64_t kept = static_cast<int64_t>(d * dn);
      int64_t top = static_cast<int64_t>(a.gamma * dn);
      int64_t bot = static_cast<int64_t>(n) - kept - top;
      if (bot < 0) {
        top += bot;
        bot = 0;
      }
      // int(gamma·n) = 0 keeps the top `kept` entries: mergekit 0.1.5 takes the ascending ranks
      // [bot, n − top) (0.1.4 took an empty range when top = 0, zeroing the tensor).
      const auto key = [&](uint64_t i) { return abs_key(tau[i]); };
      return mask_rank_range(tau, static_cast<uint64_t>(bot),
                             n - static_cast<uint64_t>(std::max<int64_t>(top, 0)), key, a);
    }
    case Sparsifier::DellaMagprune:
      if (d <= 0.0) {
        std::fill(tau.begin(), tau.end(), 0.0f);
        return;
      }
      return della(tau, a, warnings);
  }
}

}  // namespace deltaedit::merge::detail
