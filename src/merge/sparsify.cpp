// Sparsifiers of the task-vector family (MERGE.md §2.2, §3); see sparsify.h.
#include "merge/sparsify.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>
#include <utility>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "merge/method_impl.h"
#include "util/big_buffer.h"
#include "util/clones.h"

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
  for (size_t i = 0; i < tau.size(); ++i) tau[i] = kept_or_zero(tau[i], keep[i]);
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

// Keep probabilities of della's ranks (the same in every row): the Philox threshold of rank k and
// the paper's survivor scale 1/q.
struct DellaTable {
  std::vector<uint64_t> threshold;
  std::vector<float> inv_q;
};

// breadcrumbs: the ascending |τ| ranks [bot, n − top) kept once int(gamma·n) outliers are cut from
// the top and what density does not keep from the bottom. int(gamma·n) = 0 keeps the top `kept`
// entries: mergekit 0.1.5 takes these ranks (0.1.4 took an empty range when top = 0, zeroing the
// tensor).
std::pair<uint64_t, uint64_t> outlier_ranks(const SparsifyArgs& a, double d, uint64_t n) {
  const auto dn = static_cast<double>(n);
  const int64_t kept = static_cast<int64_t>(d * dn);
  int64_t top = static_cast<int64_t>(a.gamma * dn);
  int64_t bot = static_cast<int64_t>(n) - kept - top;
  if (bot < 0) {
    top += bot;
    bot = 0;
  }
  return {static_cast<uint64_t>(bot), n - static_cast<uint64_t>(std::max<int64_t>(top, 0))};
}

// The magnitude sparsifier's keep count int(density·n). Zero is refused in the mergekit
// convention (mergekit fails there) and zeroes the task vector, with a warning, in the paper's.
uint64_t magnitude_keep(const SparsifyArgs& a, double d, uint64_t n, bool paper,
                        std::vector<std::string>& warnings) {
  const uint64_t k = static_cast<uint64_t>(std::max(0.0, d * static_cast<double>(n)));
  if (k != 0) return k;
  const std::string msg = "density " + format_number(d) + " keeps int(density·n) = 0 of the " +
                          std::to_string(n) + " entries";
  if (!paper)
    usage(a, msg + " (mergekit fails here); raise density to at least " +
                 format_number(1.0 / static_cast<double>(std::max<uint64_t>(n, 1))));
  warnings.push_back(warn_prefix(a) + msg + "; its task vector is zeroed");
  return 0;
}

// Checks density ± epsilon (a usage error in mergekit, a warning in paper) and the row length;
// returns the rows.
Rows della_check(const SparsifyArgs& a, uint64_t n, std::vector<std::string>& warnings) {
  const double d = a.density, eps = a.epsilon;
  if (!(d - eps > 0.0) || !(d + eps < 1.0)) {
    const std::string msg = "della needs density ± epsilon inside (0, 1); density " +
                            format_number(d) + ", epsilon " + format_number(eps) + " give [" +
                            format_number(d - eps) + ", " + format_number(d + eps) + "]";
    if (a.conventions == Conventions::Mergekit) usage(a, msg + "; lower epsilon or move density");
    warnings.push_back(warn_prefix(a) + msg + " (paper convention: probabilities are clamped)");
  }
  const Rows rows = della_rows(a.shape, n);
  if (rows.len > 0xFFFFFFFFull) {
    throw Error(ErrorKind::Unsupported, warn_prefix(a) + "della ranks rows of at most 2^32 entries",
                "", std::string(a.tensor));
  }
  return rows;
}

void della_short_rows_warning(const SparsifyArgs& a, const Rows& rows, uint64_t n,
                              std::vector<std::string>& warnings) {
  if (rows.len == 1 && n > 0) {
    warnings.push_back(
        warn_prefix(a) +
        "della ranks rows of length 1 (mergekit gives NaN there); they are kept with "
        "probability density " +
        format_number(a.density));
  }
}

DellaTable della_table(const SparsifyArgs& a, const Rows& rows) {
  const double d = a.density, eps = a.epsilon;
  const bool paper = a.conventions == Conventions::Paper;
  const Round r{a.work};
  const double m = paper ? static_cast<double>(rows.len) : r(static_cast<float>(rows.len));
  DellaTable t;
  t.threshold.resize(rows.len);
  t.inv_q.resize(rows.len);
  for (uint64_t k = 0; k < rows.len; ++k) {
    const double rank = paper ? static_cast<double>(k + 1) : r(static_cast<float>(k + 1));
    const double norm = rows.len == 1 ? 0.5 : std::clamp((rank - 1.0) / (m - 1.0), 0.0, 1.0);
    double q = std::clamp((d - eps) + 2.0 * eps * norm, 0.0, 1.0);
    if (!paper) q = r(static_cast<float>(q));
    t.threshold[k] = util::KeyedRng::uniform_threshold(q);
    t.inv_q[k] = static_cast<float>(q > 0.0 ? 1.0 / q : 0.0);
  }
  return t;
}

// Rank of every element of `groups` whole row groups (len × stride values each, from tau[0]) in
// its row, stable by |τ| (equal keys by position). The keys of a row differ only in the bits of
// any ^ all, so key >> lo (lo its lowest such bit) orders them as the keys do; where those shifted
// keys span few values (bf16 task vectors: 15 bits, most rows a few thousand values), a counting
// sort gives the ranks in two passes over the row: rank = (keys below) + (equal keys before).
// Otherwise an LSD radix sort of the row's keys by bytes, skipping the bytes all keys share.
struct DellaScratch {
  std::vector<uint32_t> key, idx, key2, idx2, bins;
  std::vector<float> row;  // a strided row, gathered
};
constexpr uint64_t della_max_bins(uint64_t len) { return 4 * len + 1016; }
// key[j] = |τ[j]|'s bits for a contiguous row, with the OR, AND, smallest non-zero and largest of
// the keys (vector clones: the reductions vectorise with AVX2's unsigned min and max).
DELTAEDIT_CLONES void row_keys(const float* __restrict tau, uint32_t* __restrict key, uint64_t len,
                               uint32_t& any_out, uint32_t& all_out, uint32_t& kmin_out,
                               uint32_t& kmax_out) {
  // The smallest non-zero key as 1 + min(k − 1) in wrapping arithmetic (a zero key becomes the
  // largest value): no select in the loop.
  uint32_t any = 0, all = ~0u, kmin1 = ~0u, kmax = 0;
  for (uint64_t j = 0; j < len; ++j) {
    const uint32_t k = abs_key(tau[j]);
    key[j] = k;
    any |= k;
    all &= k;
    kmin1 = std::min(kmin1, k - 1u);
    kmax = std::max(kmax, k);
  }
  any_out = any;
  all_out = all;
  kmin_out = kmin1 == ~0u ? ~0u : kmin1 + 1u;
  kmax_out = kmax;
}
void della_ranks(const float* tau, const Rows& rows, uint64_t groups, uint32_t* rank_of,
                 DellaScratch& sc) {
  std::vector<uint32_t>&key = sc.key, &idx = sc.idx, &key2 = sc.key2, &idx2 = sc.idx2;
  key.resize(rows.len);
  for (uint64_t o = 0; o < groups; ++o) {
    for (uint64_t s = 0; s < rows.stride; ++s) {
      const uint64_t base = o * rows.len * rows.stride + s;
      // A strided row is gathered first, so that one loop forms the keys of every row.
      const float* row = tau + base;
      if (rows.stride != 1) {
        sc.row.resize(rows.len);
        for (uint64_t j = 0; j < rows.len; ++j) sc.row[j] = tau[base + j * rows.stride];
        row = sc.row.data();
      }
      uint32_t any, all, kmin, kmax;  // kmin: of the non-zero keys
      row_keys(row, key.data(), rows.len, any, all, kmin, kmax);
      const uint32_t vary = any ^ all;
      const unsigned lo = vary == 0 ? 0 : unsigned(std::countr_zero(vary));
      // Counting bins for the non-zero keys from the smallest; the zeros (a bf16 task vector has
      // many, far below its smallest non-zero magnitude) take ranks 0.. in index order from a
      // counter, and their increments go to eight scratch bins in turn, so that runs of zeros
      // do not wait on one bin's last store.
      const uint32_t k0 = kmax == 0 ? 0 : kmin >> lo;
      const uint64_t range = kmax == 0 ? 0 : uint64_t{kmax >> lo} - k0 + 1;
      if (range <= della_max_bins(rows.len)) {
        std::vector<uint32_t>& bins = sc.bins;
        bins.assign(range + 8, 0);
        const auto r32 = static_cast<uint32_t>(range);
        const auto slot = [&](uint32_t k, uint64_t j) {
          return k != 0 ? (k >> lo) - k0 : r32 + static_cast<uint32_t>(j & 7);
        };
        for (uint64_t j = 0; j < rows.len; ++j) ++bins[slot(key[j], j)];
        uint32_t below = 0;
        for (uint64_t d = 0; d < 8; ++d) below += bins[range + d];
        for (uint64_t b = 0; b < range; ++b) below += std::exchange(bins[b], below);
        uint32_t zeros = 0;
        for (uint64_t j = 0; j < rows.len; ++j) {
          const uint32_t k = key[j], at = slot(k, j);
          const uint32_t r = bins[at];
          bins[at] = r + 1;
          rank_of[base + j * rows.stride] = k != 0 ? r : zeros;
          zeros += k == 0;
        }
        continue;
      }
      idx.resize(rows.len);
      key2.resize(rows.len);
      idx2.resize(rows.len);
      for (uint64_t j = 0; j < rows.len; ++j) idx[j] = static_cast<uint32_t>(j);
      for (unsigned shift = 0; shift < 32; shift += 8) {
        if (((vary >> shift) & 0xFFu) == 0) continue;  // one value: the order stays
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
}

// keep[j] = uniform_bits(w0[j], w1[j]) < threshold[rank[j]], with an AVX2 clone (the gather of the
// thresholds and the 64-bit comparisons vectorise there).
DELTAEDIT_CLONES void della_compare(const uint32_t* __restrict w0, const uint32_t* __restrict w1,
                                    const uint32_t* __restrict rank,
                                    const uint64_t* __restrict threshold, uint8_t* __restrict keep,
                                    size_t n) {
  for (size_t j = 0; j < n; ++j)
    keep[j] = util::KeyedRng::uniform_bits(w0[j], w1[j]) < threshold[rank[j]] ? 1 : 0;
}

// keep[j] = uniform(first + j, DellaKeep lane) < q(rank_of[j]) (each counter's draw is its own:
// any cut gives the same keeps).
void della_keep(util::PhiloxKey key, uint64_t first, uint64_t n, const uint32_t* rank_of,
                const DellaTable& t, uint8_t* keep) {
  const uint32_t lane = purpose_lane(RandomPurpose::DellaKeep);
  constexpr uint64_t kChunk = 1024;  // batched generator (AVX2 where the CPU has it)
  uint32_t w0[kChunk], w1[kChunk];
  for (uint64_t i = 0; i < n; i += kChunk) {
    const uint64_t take = std::min<uint64_t>(kChunk, n - i);
    util::philox_blocks(key, first + i, lane, size_t(take), w0, w1, nullptr, nullptr);
    della_compare(w0, w1, rank_of + i, t.threshold.data(), keep + i, size_t(take));
  }
}

// The paper's della survivors: τ/q in f64, rounded once to W.
void della_paper_scale(std::span<float> tau, const uint8_t* keep, const uint32_t* rank_of,
                       const DellaTable& t, WorkType w) {
  const Round r{w};
  for (uint64_t i = 0; i < tau.size(); ++i)
    tau[i] =
        keep[i] ? r(static_cast<float>(static_cast<double>(tau[i]) * t.inv_q[rank_of[i]])) : 0.0f;
}

void della(std::span<float> tau, const SparsifyArgs& a, std::vector<std::string>& warnings) {
  const uint64_t n = tau.size();
  const bool paper = a.conventions == Conventions::Paper;
  const Rows rows = della_check(a, n, warnings);
  const DellaTable table = della_table(a, rows);
  std::vector<uint32_t, util::BigBufferAllocator<uint32_t>> rank_of;
  rank_of.resize(n);
  DellaScratch sc;
  della_ranks(tau.data(), rows, rows.outer, rank_of.data(), sc);
  std::vector<uint8_t> keep(n);
  della_keep(a.key, 0, n, rank_of.data(), table, keep.data());
  della_short_rows_warning(a, rows, n, warnings);
  if (!a.rescale) return apply_mask(tau, keep);
  if (!paper) return l1_rescale(tau, keep, a.work);
  della_paper_scale(tau, keep.data(), rank_of.data(), table, a.work);
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
      const uint64_t k = magnitude_keep(a, d, n, paper, warnings);
      if (k == 0) {
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
      const auto [lo, hi] = outlier_ranks(a, d, n);
      const auto key = [&](uint64_t i) { return abs_key(tau[i]); };
      return mask_rank_range(tau, lo, hi, key, a);
    }
    case Sparsifier::DellaMagprune:
      if (d <= 0.0) {
        std::fill(tau.begin(), tau.end(), 0.0f);
        return;
      }
      return della(tau, a, warnings);
  }
}

// ---- Streamed sparsification ----------------------------------------------------------------

namespace {

enum class StreamMode { Identity, Zero, Threshold, Rank, Random, Della };

static_assert(std::endian::native == std::endian::little, "pack_bits reads bytes as words");

// bits[(first + j) / 64] bit (first + j) % 64 |= keep[j] (keep[j] is 0 or 1), j < c: whole words
// at once where first + j is a multiple of 64.
void pack_bits(const uint8_t* keep, size_t c, uint64_t first, uint64_t* bits) {
  size_t j = 0;
  for (; j < c && ((first + j) & 63) != 0; ++j)
    bits[(first + j) >> 6] |= uint64_t{keep[j]} << ((first + j) & 63);
  for (; j + 64 <= c; j += 64) {
    // Eight 0/1 bytes x to eight bits: (x · 0x0102040810204080) >> 56 moves byte b's bit to bit
    // 56 + b (the partial products are distinct powers of two, so nothing carries).
    uint64_t w = 0;
    for (unsigned q = 0; q < 8; ++q) {
      uint64_t x;
      std::memcpy(&x, keep + j + 8 * q, 8);
      w |= ((x * 0x0102040810204080ull) >> 56) << (8 * q);
    }
    bits[(first + j) >> 6] |= w;
  }
  for (; j < c; ++j) bits[(first + j) >> 6] |= uint64_t{keep[j]} << ((first + j) & 63);
}

// keep[j] = bit first + j of bits, j < c.
void unpack_bits(const uint64_t* bits, uint64_t first, size_t c, uint8_t* keep) {
  size_t j = 0;
  for (; j < c && ((first + j) & 63) != 0; ++j)
    keep[j] = static_cast<uint8_t>((bits[(first + j) >> 6] >> ((first + j) & 63)) & 1u);
  for (; j + 64 <= c; j += 64) {
    // A byte v of bits to eight 0/1 bytes: byte b of v·0x0101..01 & 0x8040..01 is bit b of v in
    // place b; adding 0x7F to each byte (no carry out of it) sets its top bit iff it is non-zero.
    const uint64_t w = bits[(first + j) >> 6];
    for (unsigned q = 0; q < 8; ++q) {
      const uint64_t v = (w >> (8 * q)) & 0xFFu;
      const uint64_t y = (v * 0x0101010101010101ull) & 0x8040201008040201ull;
      const uint64_t x = ((y + 0x7F7F7F7F7F7F7F7Full) >> 7) & 0x0101010101010101ull;
      std::memcpy(keep + j + 8 * q, &x, 8);
    }
  }
  for (; j < c; ++j)
    keep[j] = static_cast<uint8_t>((bits[(first + j) >> 6] >> ((first + j) & 63)) & 1u);
}

#if defined(__SSE2__)
// The rank rule on four keys with SSE2: for x the bits of τ, k = (x & 0x7FFFFFFF) ^ flip,
// ok = (no_lo | k > av) & (no_hi | k < bv) and eq = k at a cut that applies, as −1/0 lanes.
// Unsigned order by signed comparison with the top bit flipped on both sides.
struct RankCmp4 {
  __m128i sign, abs_mask, fv, a, b, as, bs, lo_off, hi_off;
  RankCmp4(uint32_t flip, uint32_t av, uint32_t bv, bool no_lo, bool no_hi)
      : sign(_mm_set1_epi32(static_cast<int>(0x80000000u))),
        abs_mask(_mm_set1_epi32(0x7FFFFFFF)),
        fv(_mm_set1_epi32(static_cast<int>(flip))),
        a(_mm_set1_epi32(static_cast<int>(av))),
        b(_mm_set1_epi32(static_cast<int>(bv))),
        as(_mm_xor_si128(a, sign)),
        bs(_mm_xor_si128(b, sign)),
        lo_off(_mm_set1_epi32(no_lo ? -1 : 0)),
        hi_off(_mm_set1_epi32(no_hi ? -1 : 0)) {}
  void operator()(__m128i x, __m128i& ok, __m128i& eq) const {
    const __m128i k = _mm_xor_si128(_mm_and_si128(x, abs_mask), fv);
    const __m128i ks = _mm_xor_si128(k, sign);
    ok = _mm_and_si128(_mm_or_si128(lo_off, _mm_cmpgt_epi32(ks, as)),
                       _mm_or_si128(hi_off, _mm_cmpgt_epi32(bs, ks)));
    eq = _mm_or_si128(_mm_andnot_si128(lo_off, _mm_cmpeq_epi32(k, a)),
                      _mm_andnot_si128(hi_off, _mm_cmpeq_epi32(k, b)));
  }
};

// Sixteen −1/0 lanes as bytes: they stay −1/0 through the saturating packs (32 → 16 → 8 bits).
inline __m128i pack16(const __m128i (&v)[4]) {
  return _mm_packs_epi16(_mm_packs_epi32(v[0], v[1]), _mm_packs_epi32(v[2], v[3]));
}
#endif

// The vectorisable part of the streamed rank mask (State::keep_block), on a tile of len ≤ 64
// keys: keep = ok as 0/1 bytes (RankCmp4), and returned, bit t set where key t is at a cut that
// applies (its keep depends on the running counts and is fixed up by the caller). Sixteen keys a
// step with SSE2 (part of x86-64; the compiler's own vectorisation of the scalar loop narrows the
// 32-bit masks to bytes one lane at a time), the rest one at a time.
uint64_t rank_tile(const float* tp, uint8_t* kp, size_t len, uint32_t flip, uint32_t av,
                   uint32_t bv, bool no_lo, bool no_hi) {
  size_t j = 0;
  uint64_t eq_bits = 0;
#if defined(__SSE2__)
  const RankCmp4 cmp(flip, av, bv, no_lo, no_hi);
  const __m128i one = _mm_set1_epi8(1);
  for (; j + 16 <= len; j += 16) {
    __m128i ok[4], eq[4];
    for (int q = 0; q < 4; ++q)
      cmp(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tp + j + 4 * q)), ok[q], eq[q]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(kp + j), _mm_and_si128(pack16(ok), one));
    eq_bits |= uint64_t(uint32_t(_mm_movemask_epi8(pack16(eq)))) << j;
  }
#endif
  for (; j < len; ++j) {
    const uint32_t k = abs_key(tp[j]) ^ flip;
    const bool ok_lo = no_lo | (k > av), ok_hi = no_hi | (k < bv);
    eq_bits |= uint64_t((!no_lo & (k == av)) | (!no_hi & (k == bv))) << j;
    kp[j] = static_cast<uint8_t>(ok_lo & ok_hi);
  }
  return eq_bits;
}

// rank_tile's rule applied in place: τ[j] is kept where its key passes both cuts or is at a cut
// (whose keep the caller then decides), +0 elsewhere; returns the bits of the keys at a cut.
uint64_t rank_apply_tile(float* tp, size_t len, uint32_t flip, uint32_t av, uint32_t bv, bool no_lo,
                         bool no_hi) {
  size_t j = 0;
  uint64_t eq_bits = 0;
#if defined(__SSE2__)
  const RankCmp4 cmp(flip, av, bv, no_lo, no_hi);
  for (; j + 16 <= len; j += 16) {
    __m128i ok, eq[4];
    for (int q = 0; q < 4; ++q) {
      float* p = tp + j + 4 * q;
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      cmp(x, ok, eq[q]);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_and_si128(x, _mm_or_si128(ok, eq[q])));
    }
    eq_bits |= uint64_t(uint32_t(_mm_movemask_epi8(pack16(eq)))) << j;
  }
#endif
  for (; j < len; ++j) {
    const uint32_t k = abs_key(tp[j]) ^ flip;
    const bool ok = (no_lo | (k > av)) & (no_hi | (k < bv));
    const bool eq = (!no_lo & (k == av)) | (!no_hi & (k == bv));
    eq_bits |= uint64_t(eq) << j;
    tp[j] = kept_or_zero(tp[j], static_cast<uint8_t>(ok | eq));
  }
  return eq_bits;
}

// The mode sparsify() takes for `a` (before its usage checks).
StreamMode stream_mode(const SparsifyArgs& a) {
  if (a.kind == Sparsifier::None) return StreamMode::Identity;
  if (a.kind == Sparsifier::Magnitude && a.threshold) return StreamMode::Threshold;
  if (a.density >= 1.0) return StreamMode::Identity;
  switch (a.kind) {
    case Sparsifier::Magnitude:
    case Sparsifier::MagnitudeOutliers:
      return StreamMode::Rank;
    case Sparsifier::Random:
      return StreamMode::Random;
    case Sparsifier::DellaMagprune:
      return a.density <= 0.0 ? StreamMode::Zero : StreamMode::Della;
    case Sparsifier::None:
      break;
  }
  return StreamMode::Identity;
}

}  // namespace

namespace {
// a[j] = |t[j]|, k[j] = keep[j] ? |t[j]| : +0.
DELTAEDIT_CLONES void abs_and_kept(const float* __restrict t, const uint8_t* __restrict keep,
                                   float* __restrict a, float* __restrict k, size_t n) {
  for (size_t j = 0; j < n; ++j) {
    const float x = std::fabs(t[j]);
    a[j] = x;
    k[j] = kept_or_zero(x, keep[j]);
  }
}
// t[j] = keep[j] ? ⟦t[j]·ratio⟧ : +0 (l1_rescale's last step).
DELTAEDIT_CLONES void rescale_kept(WorkType work, float ratio, const uint8_t* __restrict keep,
                                   float* __restrict t, size_t n) {
  with_rounding(work, [&](auto rr) DELTAEDIT_INLINE {
    for (size_t j = 0; j < n; ++j) t[j] = kept_or_zero(rr(t[j] * ratio), keep[j]);
  });
}

// k[j] = abs_key(⟦x[j] − b[j]⟧) ^ flip.
DELTAEDIT_CLONES void task_vector_keys(WorkType work, const float* __restrict x,
                                       const float* __restrict b, uint32_t flip,
                                       uint32_t* __restrict k, size_t n) {
  with_rounding(work, [&](auto rr) DELTAEDIT_INLINE {
    for (size_t j = 0; j < n; ++j) k[j] = abs_key(rr(x[j] - b[j])) ^ flip;
  });
}
}  // namespace

struct SparsifyStream::State {
  SparsifyArgs a;
  std::vector<int64_t> shape;
  std::string tensor;
  uint64_t n = 0;
  StreamMode mode = StreamMode::Identity;
  WorkType l1_work = WorkType::F32;  // the rounding of the L1 rescale
  bool sums = false;                 // the survivors are rescaled by the L1 ratio
  bool f16_after = false;            // dare on f16: the rescaled values are rounded to f16
  double p = 0.0;                    // random: keep probability

  // Rank: keep the stable ascending ranks [lo, hi) of key (|τ| descending for magnitude).
  bool descending = false;
  uint64_t lo = 0, hi = 0;
  bool cut_lo = false, cut_hi = false, none = false;
  std::optional<util::RankSelect> select;
  util::RankCut a_cut, b_cut;
  uint64_t eq_lo = 0, eq_hi = 0;

  // Della.
  Rows rows;
  DellaTable table;
  DellaScratch scratch;
  std::vector<uint32_t> rank_of;

  // L1 sums: B = Σ|τ|, A = Σ keep·|τ|.
  enum class Stage { Select, Sum, Output } stage = Stage::Output;
  bool started = false;
  util::BlockedSum b_sum, a_sum;
  float ratio = 1.0f;
  bool scale = false;

  uint64_t next = 0;  // the next element expected (blocks come in index order)
  std::vector<uint8_t> keep;
  // Random draws and della's ranks are costly: the L1 pass keeps its mask, one bit an element,
  // for the output pass.
  bool store = false;
  std::vector<uint64_t> bits;

  std::vector<float> abs, kept_abs;  // the L1 pass's terms of a block

  uint32_t key(float x) const { return descending ? ~abs_key(x) : abs_key(x); }

  void expect(uint64_t first, size_t count) {
    if (first != next) {
      throw Error(ErrorKind::Internal,
                  "streamed sparsify: block at " + std::to_string(first) + ", expected " +
                      std::to_string(next),
                  "", tensor);
    }
    next += count;
  }

  // keep[j] for the block at `first` (in index order: the rank counters advance).
  void keep_block(std::span<const float> tau, uint64_t first) {
    const size_t c = tau.size();
    keep.resize(c);
    switch (mode) {
      case StreamMode::Identity:
        std::fill(keep.begin(), keep.end(), uint8_t{1});
        return;
      case StreamMode::Zero:
        std::fill(keep.begin(), keep.end(), uint8_t{0});
        return;
      case StreamMode::Threshold: {
        const uint32_t t = abs_key(*a.threshold);
        for (size_t j = 0; j < c; ++j)
          keep[j] = abs_key(tau[j]) >= t && !std::isnan(tau[j]) ? 1 : 0;
        return;
      }
      case StreamMode::Rank: {
        if (none) {
          std::fill(keep.begin(), keep.end(), uint8_t{0});
          return;
        }
        uint8_t* kp = keep.data();
        const float* tp = tau.data();
        rank_rule(
            tp, c,
            [&](size_t j0, size_t len, const CutView& v) {
              return rank_tile(tp + j0, kp + j0, len, v.flip, v.av, v.bv, v.no_lo, v.no_hi);
            },
            [&](size_t j, bool ok) { kp[j] = static_cast<uint8_t>(ok); });
        return;
      }
      case StreamMode::Random:
        draw_keep(a.key, RandomPurpose::DareKeep, first, c, p, keep.data());
        return;
      case StreamMode::Della:
        if (c % (rows.len * rows.stride) != 0) {
          throw Error(ErrorKind::Internal, "streamed della: a block of partial rows", "", tensor);
        }
        rank_of.resize(c);
        della_ranks(tau.data(), rows, c / (rows.len * rows.stride), rank_of.data(), scratch);
        della_keep(a.key, first, c, rank_of.data(), table, keep.data());
        return;
    }
  }

  // keep_block then τ ← keep ? τ : +0 for StreamMode::Rank, in one pass over τ.
  void apply_rank(std::span<float> tau) {
    if (none) {
      std::fill(tau.begin(), tau.end(), 0.0f);
      return;
    }
    float* tp = tau.data();
    rank_rule(
        tp, tau.size(),
        [&](size_t j0, size_t len, const CutView& v) {
          return rank_apply_tile(tp + j0, len, v.flip, v.av, v.bv, v.no_lo, v.no_hi);
        },
        [&](size_t j, bool ok) { tp[j] = kept_or_zero(tp[j], static_cast<uint8_t>(ok)); });
  }

  // The rank cuts as the vector tiles take them.
  struct CutView {
    uint32_t flip, av, bv;
    bool no_lo, no_hi;
  };

  // for_rank_range's rule over a block of c keys at tp, in tiles of 64, with its counters
  // carried from block to block: tile(j0, len, cuts) runs the comparisons of a tile in vectors
  // and returns the bits of its keys at a cut (their keys left intact in tp); only those, whose
  // keeps depend on the running counts, take the counting rule, in index order, and set(j, ok)
  // records their keep. (The counters are held in locals: the stores of set could alias the
  // members.)
  template <class Tile, class Set>
  void rank_rule(const float* tp, size_t c, Tile&& tile, Set&& set) {
    const CutView v{descending ? ~0u : 0u, a_cut.value, b_cut.value, !cut_lo, !cut_hi};
    const uint64_t a_need = lo - std::min(lo, a_cut.below), b_room = hi - std::min(hi, b_cut.below);
    uint64_t el = eq_lo, eh = eq_hi;
    constexpr size_t kTile = 64;
    for (size_t j0 = 0; j0 < c; j0 += kTile) {
      const size_t len = std::min(kTile, c - j0);
      for (uint64_t eq = tile(j0, len, v); eq != 0; eq &= eq - 1) {
        const size_t j = j0 + size_t(std::countr_zero(eq));
        const uint32_t k = abs_key(tp[j]) ^ v.flip;
        const bool eq_a = !v.no_lo & (k == v.av), eq_b = !v.no_hi & (k == v.bv);
        // a.below + eq_lo >= lo  ⇔  eq_lo >= lo − a.below (and b.below + eq_hi < hi likewise).
        const bool ok_lo = v.no_lo | (k > v.av) | (eq_a & (el >= a_need));
        const bool ok_hi = v.no_hi | (k < v.bv) | (eq_b & (eh < b_room));
        el += eq_a;
        eh += eq_b;
        set(j, ok_lo & ok_hi);
      }
    }
    eq_lo = el;
    eq_hi = eh;
  }

  void begin_output() {
    stage = Stage::Output;
    next = 0;
    eq_lo = eq_hi = 0;
    if (sums) {
      const float b = Round{l1_work}(static_cast<float>(b_sum.sum()));
      const float a = Round{l1_work}(static_cast<float>(a_sum.sum()));
      scale = !(b < 1e-7f) && !(a < 1e-7f);
      ratio = scale ? Round{l1_work}(b / a) : 1.0f;
    }
  }
};

bool SparsifyStream::supported(const SparsifyArgs& a) {
  const uint64_t n = numel(a.shape);
  switch (stream_mode(a)) {
    case StreamMode::Rank:
      return n <= util::RankSelect::kMaxKeys;
    case StreamMode::Della: {
      const Rows rows = della_rows(a.shape, n);
      return rows.len <= 0xFFFFFFFFull && rows.len * rows.stride > 0;
    }
    default:
      return true;
  }
}

uint64_t SparsifyStream::quantum(const SparsifyArgs& a) {
  if (stream_mode(a) != StreamMode::Della) return 1;
  const Rows rows = della_rows(a.shape, numel(a.shape));
  return std::max<uint64_t>(1, rows.len * rows.stride);
}

// The mask bits the L1 pass keeps (stored_mask) for random and della keeps.
static bool stored_mask(StreamMode mode, const SparsifyArgs& a) {
  const bool sums = a.rescale && a.conventions == Conventions::Mergekit;
  return sums && (mode == StreamMode::Random || mode == StreamMode::Della);
}

uint64_t SparsifyStream::state_bytes(const SparsifyArgs& a) {
  const StreamMode mode = stream_mode(a);
  const uint64_t n = numel(a.shape);
  const uint64_t mask = stored_mask(mode, a) ? (n + 63) / 64 * 8 : 0;
  switch (mode) {
    case StreamMode::Rank:
      return util::RankSelect::bytes(2);
    case StreamMode::Della: {
      const Rows rows = della_rows(a.shape, n);
      // table + scratch (keys, indices, counting bins; a block's ranks: with the block)
      return mask + rows.len * (8 + 4 + 16 + (rows.stride > 1 ? 4 : 0)) +
             (della_max_bins(rows.len) + 8) * 4;
    }
    default:
      return mask;
  }
}

SparsifyStream::SparsifyStream(const SparsifyArgs& args, std::vector<std::string>& warnings)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.shape.assign(args.shape.begin(), args.shape.end());
  s.tensor = std::string(args.tensor);
  s.a = args;
  s.a.shape = s.shape;
  s.a.tensor = s.tensor;
  const SparsifyArgs& a = s.a;
  const uint64_t n = s.n = numel(s.shape);
  const bool paper = a.conventions == Conventions::Paper;
  const double d = a.density;
  s.mode = stream_mode(a);
  s.l1_work = a.work;
  switch (s.mode) {
    case StreamMode::Identity:
    case StreamMode::Zero:
      break;
    case StreamMode::Threshold:
      s.sums = a.rescale;
      break;
    case StreamMode::Rank: {
      s.sums = a.rescale;
      if (a.kind == Sparsifier::Magnitude) {
        const uint64_t k = magnitude_keep(a, d, n, paper, warnings);
        if (k == 0) {
          s.mode = StreamMode::Zero;
          s.sums = false;
          break;
        }
        s.descending = true;
        s.lo = 0;
        s.hi = k;
      } else {
        std::tie(s.lo, s.hi) = outlier_ranks(a, d, n);
      }
      s.hi = std::min(s.hi, n);
      s.none = s.lo >= s.hi;
      if (s.none) s.sums = false;  // nothing survives: no ratio to find
      s.cut_lo = !s.none && s.lo > 0;
      s.cut_hi = !s.none && s.hi < n;
      std::vector<uint64_t> ranks;
      if (s.cut_lo) ranks.push_back(s.lo);
      if (s.cut_hi) ranks.push_back(s.hi - 1);
      if (!ranks.empty()) {
        s.select.emplace(n, ranks);
        s.stage = State::Stage::Select;
      }
      break;
    }
    case StreamMode::Random:
      s.p = paper ? d
                  : (a.work == WorkType::BF16 ? round_to_work(WorkType::BF16, static_cast<float>(d))
                                              : static_cast<float>(d));
      s.sums = a.rescale && !paper;
      s.l1_work = a.work == WorkType::F16 ? WorkType::F32 : a.work;
      s.f16_after = s.sums && a.work == WorkType::F16;
      break;
    case StreamMode::Della:
      s.rows = della_check(a, n, warnings);
      s.table = della_table(a, s.rows);
      della_short_rows_warning(a, s.rows, n, warnings);
      s.sums = a.rescale && !paper;
      break;
  }
  s.store = s.sums && stored_mask(s.mode, a);
  if (s.store) s.bits.assign((n + 63) / 64, 0);
  if (s.stage != State::Stage::Select) s.stage = s.sums ? State::Stage::Sum : State::Stage::Output;
  if (s.stage == State::Stage::Output) s.begin_output();
}

SparsifyStream::~SparsifyStream() = default;

bool SparsifyStream::next_pass() {
  State& s = *s_;
  if (s.stage == State::Stage::Select) {
    if (s.started && s.next != s.n) {
      throw Error(ErrorKind::Internal, "streamed sparsify: a pass did not cover the tensor", "",
                  s.tensor);
    }
    s.started = true;
    s.next = 0;
    if (s.select->next_pass()) return true;
    size_t j = 0;
    if (s.cut_lo) s.a_cut = s.select->cut(j++);
    if (s.cut_hi) s.b_cut = s.select->cut(j++);
    s.select.reset();
    if (!s.sums) {
      s.begin_output();
      return false;
    }
    s.stage = State::Stage::Sum;
    s.started = false;
  }
  if (s.stage == State::Stage::Sum) {
    if (!s.started) {
      s.started = true;
      s.next = 0;
      s.eq_lo = s.eq_hi = 0;
      return true;
    }
    if (s.next != s.n) {
      throw Error(ErrorKind::Internal, "streamed sparsify: a pass did not cover the tensor", "",
                  s.tensor);
    }
    s.begin_output();
  }
  return false;
}

bool SparsifyStream::observing() const {
  return s_->stage == State::Stage::Select || s_->stage == State::Stage::Sum;
}

void SparsifyStream::observe(std::span<const float> tau, uint64_t first) {
  State& s = *s_;
  if (!observing()) return;
  s.expect(first, tau.size());
  if (s.stage == State::Stage::Select) {
    s.select->add(tau.size(), [&](size_t j) { return s.key(tau[j]); });
    return;
  }
  s.keep_block(tau, first);
  if (s.store) pack_bits(s.keep.data(), tau.size(), first, s.bits.data());
  // B += |τ| and A += keep·|τ| (the mask as bits: x & mask is x or +0), through the vector
  // clones of BlockedSum::add_f32 (|x| is exact in f32, so the terms are those of the f64 |x|).
  const size_t c = tau.size();
  s.abs.resize(c);
  s.kept_abs.resize(c);
  abs_and_kept(tau.data(), s.keep.data(), s.abs.data(), s.kept_abs.data(), c);
  s.b_sum.add_f32(std::span<const float>(s.abs.data(), c));
  s.a_sum.add_f32(std::span<const float>(s.kept_abs.data(), c));
}

bool SparsifyStream::observe_task_vector(std::span<const float> x, std::span<const float> b,
                                         uint64_t first) {
  State& s = *s_;
  if (s.stage != State::Stage::Select || x.size() != b.size()) return false;
  s.expect(first, x.size());
  // The keys of a tile in a vector loop, then the histogram's scatter.
  const uint32_t flip = s.descending ? ~0u : 0u;
  constexpr size_t kTile = 1024;
  uint32_t keys[kTile];
  for (size_t j0 = 0; j0 < x.size(); j0 += kTile) {
    const size_t len = std::min(kTile, x.size() - j0);
    task_vector_keys(s.a.work, x.data() + j0, b.data() + j0, flip, keys, len);
    s.select->add(len, [&](size_t j) { return keys[j]; });
  }
  return true;
}

void SparsifyStream::apply(std::span<float> tau, uint64_t first) {
  State& s = *s_;
  if (s.stage != State::Stage::Output) {
    throw Error(ErrorKind::Internal, "streamed sparsify: output before the read passes", "",
                s.tensor);
  }
  s.expect(first, tau.size());
  if (s.mode == StreamMode::Identity) return;
  if (s.mode == StreamMode::Zero) {
    std::fill(tau.begin(), tau.end(), 0.0f);
    return;
  }
  const size_t c = tau.size();
  if (s.mode == StreamMode::Rank && !s.sums && !s.store) {
    s.apply_rank(tau);
    return;
  }
  if (s.store) {
    s.keep.resize(c);
    unpack_bits(s.bits.data(), first, c, s.keep.data());
  } else {
    s.keep_block(tau, first);
  }
  const uint8_t* keep = s.keep.data();
  if (s.sums) {
    // l1_rescale's last step (and dare's f16 rounding after it), as bit masks so that it
    // vectorises: x & mask is x or +0.
    float* t = tau.data();
    const float ratio = s.ratio;
    if (s.scale) {
      rescale_kept(s.l1_work, ratio, keep, t, c);
    } else {
      for (size_t j = 0; j < c; ++j) t[j] = kept_or_zero(t[j], keep[j]);
    }
    if (s.f16_after) {
      for (float& x : tau) x = round_to_work(WorkType::F16, x);
    }
    return;
  }
  const bool paper = s.a.conventions == Conventions::Paper;
  if (s.mode == StreamMode::Random && s.a.rescale && paper) {
    const Round r{s.a.work};
    const double inv = s.a.density > 0.0 ? 1.0 / s.a.density : 0.0;
    for (size_t j = 0; j < c; ++j) tau[j] = keep[j] ? r(static_cast<float>(tau[j] * inv)) : 0.0f;
    return;
  }
  if (s.mode == StreamMode::Della && s.a.rescale && paper) {
    della_paper_scale(tau, keep, s.rank_of.data(), s.table, s.a.work);
    return;
  }
  float* t = tau.data();
  for (size_t j = 0; j < c; ++j) t[j] = kept_or_zero(t[j], keep[j]);
}

}  // namespace deltaedit::merge::detail
