#include "analysis/delta_stats.h"

#include <cmath>

namespace deltaedit::analysis {

// Eight independent f64 lanes, combined in a fixed order: vectorisable and deterministic.
void DeltaAccum::add(std::span<const float> base, std::span<const float> post) {
  constexpr size_t L = 8;
  double s[L] = {}, sq[L] = {}, sa[L] = {}, mx[L] = {}, bsq[L] = {};
  uint64_t pos[L] = {}, zer[L] = {}, bad[L] = {};
  const size_t n_ = base.size();
  size_t i = 0;
  for (; i + L <= n_; i += L) {
    for (size_t j = 0; j < L; ++j) {
      const float b = base[i + j];
      const float d = post[i + j] - b;
      const double dd = d;
      const bool fin = std::isfinite(d) && std::isfinite(b);
      const double dz = fin ? dd : 0.0;
      s[j] += dz;
      sq[j] += dz * dz;
      sa[j] += std::fabs(dz);
      mx[j] = std::fmax(mx[j], std::fabs(dz));
      bsq[j] += fin ? double(b) * double(b) : 0.0;
      pos[j] += fin && d > 0;
      zer[j] += fin && d == 0;
      bad[j] += !fin;
    }
  }
  for (; i < n_; ++i) {
    const float b = base[i];
    const float d = post[i] - b;
    const bool fin = std::isfinite(d) && std::isfinite(b);
    const double dz = fin ? double(d) : 0.0;
    s[0] += dz;
    sq[0] += dz * dz;
    sa[0] += std::fabs(dz);
    mx[0] = std::fmax(mx[0], std::fabs(dz));
    bsq[0] += fin ? double(b) * double(b) : 0.0;
    pos[0] += fin && d > 0;
    zer[0] += fin && d == 0;
    bad[0] += !fin;
  }
  for (size_t j = 0; j < L; ++j) {
    sum += s[j];
    sumsq += sq[j];
    sumabs += sa[j];
    maxabs = std::fmax(maxabs, mx[j]);
    base_sumsq += bsq[j];
    positive += pos[j];
    zero += zer[j];
    nonfinite += bad[j];
  }
  n += n_;
}

void DeltaAccum::merge(const DeltaAccum& o) {
  n += o.n;
  positive += o.positive;
  zero += o.zero;
  nonfinite += o.nonfinite;
  sum += o.sum;
  sumsq += o.sumsq;
  sumabs += o.sumabs;
  maxabs = std::fmax(maxabs, o.maxabs);
  base_sumsq += o.base_sumsq;
}

DeltaStats DeltaStats::from(const DeltaAccum& a) {
  DeltaStats s;
  s.n = a.n;
  s.nonfinite = a.nonfinite;
  const double m = double(a.n > a.nonfinite ? a.n - a.nonfinite : 0);
  s.norm = std::sqrt(a.sumsq);
  s.rel_norm = a.base_sumsq > 0 ? s.norm / std::sqrt(a.base_sumsq) : 0.0;
  if (m > 0) {
    s.mean = a.sum / m;
    s.std = std::sqrt(std::fmax(0.0, a.sumsq / m - s.mean * s.mean));
    s.mean_abs = a.sumabs / m;
    s.frac_positive = double(a.positive) / m;
    s.frac_zero = double(a.zero) / m;
  }
  s.max_abs = a.maxabs;
  return s;
}

nlohmann::json DeltaStats::to_json() const {
  return {{"numel", n},          {"norm", norm},
          {"rel_norm", rel_norm}, {"mean", mean},
          {"std", std},          {"mean_abs", mean_abs},
          {"max_abs", max_abs},  {"frac_positive", frac_positive},
          {"frac_zero", frac_zero}, {"nonfinite", nonfinite}};
}

void EditAccum::add(std::span<const float> delta, std::span<const float> edited) {
  for (size_t i = 0; i < delta.size(); ++i) {
    const float a = delta[i], b = edited[i];
    if (!std::isfinite(a) || !std::isfinite(b)) {
      ++nonfinite;
      continue;
    }
    const double da = a, db = b, d = db - da;
    delta_sumsq += da * da;
    edited_sumsq += db * db;
    d_sumsq += d * d;
    dot += da * db;
    if (a != 0) {
      ++nonzero_pairs;
      sign_agree += (a > 0 && b > 0) || (a < 0 && b < 0);
    }
  }
  n += delta.size();
}

void EditAccum::merge(const EditAccum& o) {
  n += o.n;
  sign_agree += o.sign_agree;
  nonzero_pairs += o.nonzero_pairs;
  nonfinite += o.nonfinite;
  delta_sumsq += o.delta_sumsq;
  edited_sumsq += o.edited_sumsq;
  d_sumsq += o.d_sumsq;
  dot += o.dot;
}

EditStats EditStats::from(const EditAccum& a) {
  EditStats s;
  s.nonfinite = a.nonfinite;
  if (a.delta_sumsq > 0) {
    s.intensity = a.d_sumsq / a.delta_sumsq;
    s.d_over_delta = std::sqrt(s.intensity);
  }
  if (a.delta_sumsq > 0 && a.edited_sumsq > 0) s.cosine = a.dot / std::sqrt(a.delta_sumsq * a.edited_sumsq);
  if (a.nonzero_pairs > 0) s.sign_agreement = double(a.sign_agree) / double(a.nonzero_pairs);
  return s;
}

nlohmann::json EditStats::to_json() const {
  return {{"d_over_delta", d_over_delta},
          {"intensity", intensity},
          {"cosine", cosine},
          {"sign_agreement", sign_agreement},
          {"nonfinite", nonfinite}};
}

}  // namespace deltaedit::analysis
