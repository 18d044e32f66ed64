// magnitude: keep exactly ⌊(1−p)·n⌋ entries of largest |Δ| per scope (ties: lower index first),
// Δ'=0 elsewhere, no rescale.
//
// Selection is linear time and needs no copy of the tensor: the threshold key T of the keep-th
// largest entry is found by a two-pass radix select (util::RankSelect, shared with the merge
// methods: a histogram of the high 16 key bits, then of the low 16 bits inside the bin that holds
// the keep-th largest); short scopes use
// std::nth_element on a small key buffer instead (same T). Every entry above T is kept, and of the
// entries equal to T the lowest indices fill the remaining places. This is exactly the top-keep of
// the order (|Δ| descending, index ascending) without sorting. Keys are the bit patterns of |Δ|
// (abs_bits), a strict total order in which NaN ranks above +Inf, so NaN entries are kept first
// and stay visible. scope=row selects per row (rows = shape[0]; a tensor with < 2 dims is one row).
// scope=tensor also streams: a multi-pass op that finds the same T from histograms of the
// streamed Δ (one to three reads of the inputs before the output pass, no whole-tensor
// buffer; see Stream).
#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "edit/op_impl.h"
#include "util/clones.h"
#include "util/rank_select.h"

namespace deltaedit::edit::detail {
namespace {

// x[i] is kept when its key is above t, or equal to t at index first + i ≤ last; else +0. In bits,
// the keep a mask, so the loop vectorises (vector clones); the same values as the plain select.
DELTAEDIT_CLONES void keep_above(float* x, size_t n, uint32_t t, uint64_t first, uint64_t last) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t v = std::bit_cast<uint32_t>(x[i]);
    const uint32_t b = abs_bits(x[i]);
    const uint32_t kept = uint32_t(b > t) | (uint32_t(b == t) & uint32_t(first + i <= last));
    x[i] = std::bit_cast<float>(v & (0u - kept));
  }
}

// The op's selection, shared by its two execution kinds below.
class Magnitude {
 public:
  // Scopes shorter than this select with nth_element on a key copy (cheaper than clearing the
  // histograms); longer ones by radix select, which needs no copy.
  static constexpr int64_t kRadixMin = int64_t{1} << 16;

  // Positions of the keys in the threshold's high bin kept during the low-bits pass (8 bytes
  // each); beyond this many a third pass finds the cut among the ties.
  static constexpr size_t kCandidates = size_t{1} << 19;

  // Streaming threshold select (scope=tensor), one pass of the streamed Δ each; the key at
  // ascending rank n − keep is found by util::RankSelect (per-bin low-bit OR/AND kept):
  //  High: histogram of the high 16 key bits — gives the bin h of the keep-th largest key and,
  //        when every key in h is the same, that key, the threshold T;
  //  Low:  (when h holds several keys) histogram of the low 16 bits inside h — gives T — and
  //        the positions of the keys in h while at most kCandidates;
  //  Ties: (only when some keys equal to T must go and their positions are not known) the index
  //        of the (keep − above)-th key equal to T, in index order.
  // Then Δ'_i = Δ_i iff key_i > T, or key_i = T at an index ≤ that last tie kept.
  //
  // The window: in a tensor of at least kWindowMin keys, the High pass also guesses where T lies
  // from the histogram of its first kPrefix keys (the bins holding the ascending ranks within
  // kWindowSd standard deviations of the keep-th largest key's rank in that prefix) and keeps every
  // key in those bins with its index (at most kWindowKeys). When the bin h found by the High pass
  // is inside the window, those keys are the Low pass's keys, in index order, and the Low pass
  // needs no read of the inputs: one read fewer, the same T, the same ties. When h falls outside (a
  // prefix unlike the rest of the tensor) or the window overflows, the Low pass reads the inputs.
  static constexpr int64_t kWindowMin = int64_t{1} << 22;
  static constexpr size_t kPrefix = size_t{1} << 20;
  static constexpr double kWindowSd = 4.0;
  static constexpr size_t kWindowKeys = size_t{1} << 20;

  enum class Phase { High, Low, Ties, Done };
  struct Stream {
    int64_t n = 0, keep = 0;
    Phase phase = Phase::High;
    std::optional<util::RankSelect64> select;
    std::vector<uint64_t> cand;  // (index << 16) | low key bits, in index order
    bool cand_complete = true;
    uint32_t h = 0, t = 0;
    int64_t above = 0;                       // keys above T
    int64_t ties_needed = 0, ties_seen = 0;  // keys equal to T to keep; seen so far
    uint64_t last_tie = 0;
    bool all_ties = false;  // every key equal to T is kept
    // The window (High pass): the prefix's keys until the window is chosen, then the kept keys
    // as (index << 32) | key, in index order; off when not used or overflowed.
    bool window = false, window_chosen = false;
    uint32_t wlo = 0, whi = 0;  // high bins [wlo, whi]
    std::vector<uint32_t> prefix;
    std::vector<uint64_t> win;
  };

  Magnitude(double p, bool rows) : p_(p), rows_(rows) {}
  nlohmann::json own_params() const { return {{"p", p_}, {"scope", rows_ ? "row" : "tensor"}}; }
  uint64_t workspace_bytes(std::span<const int64_t> shape) const {
    const int64_t n = shape_elements(shape);
    const int64_t per = rows_ && shape.size() >= 2 && shape[0] > 0 ? n / shape[0] : n;
    if (per < kRadixMin) return static_cast<uint64_t>(per) * sizeof(uint32_t);
    // The histograms, and in the streamed form the candidate positions of the threshold's bin.
    return util::RankSelect64::bytes(1, true) +
           (rows_
                ? 0
                : kCandidates * sizeof(uint64_t) +
                      (n >= kWindowMin ? kPrefix * sizeof(uint32_t) + kWindowKeys * sizeof(uint64_t)
                                       : 0));
  }

  OpOutcome apply(std::span<float> delta, const TensorContext& ctx) const {
    if (p_ == 0.0) return {};
    RowView view{1, static_cast<int64_t>(delta.size())};
    if (rows_) view = row_view(ctx.shape, delta.size(), ctx.name);
    Workspace ws;
    for (int64_t r = 0; r < view.rows; ++r)
      keep_top(delta.subspan(static_cast<size_t>(r * view.cols), static_cast<size_t>(view.cols)),
               ws);
    return {};
  }

  // scope=tensor streams as a multi-pass op (see the Stream state below).
  bool rows() const { return rows_; }
  Stream observe_begin(const TensorContext& ctx) const {
    Stream st;
    st.n = shape_elements(ctx.shape);
    st.keep = p_ == 0.0 ? st.n : floor_count(1.0 - p_, st.n);
    if (st.keep >= st.n || st.keep == 0) {
      st.phase = Phase::Done;
    } else {
      // The keep-th largest key is the key at ascending rank n − keep.
      st.select.emplace(static_cast<uint64_t>(st.n),
                        std::vector<uint64_t>{uint64_t(st.n - st.keep)},
                        /*per_bin=*/true);
      st.select->next_pass();
      st.window = st.n >= kWindowMin && static_cast<uint64_t>(st.n) <= (uint64_t{1} << 32);
      if (st.window) st.prefix.reserve(kPrefix);
    }
    return st;
  }
  void observe(Stream& st, std::span<const float> piece, uint64_t first) const {
    switch (st.phase) {
      case Phase::High:
        st.select->add(piece.size(), [&](size_t i) { return abs_bits(piece[i]); });
        if (st.window) collect_window(st, piece, first);
        break;
      case Phase::Low: {
        // One scan for the keys in bin h: they are the low pass's keys (RankSelect counts only
        // the keys of h there, so handing it just those gives the same histogram) and the
        // candidate positions.
        LowKeys low(st);
        for (size_t i = 0; i < piece.size(); ++i) {
          const uint32_t b = abs_bits(piece[i]);
          if ((b >> 16) == st.h) low.add(first + i, b);
        }
        low.flush();
        break;
      }
      case Phase::Ties:
        for (size_t i = 0; i < piece.size() && st.ties_seen < st.ties_needed; ++i) {
          if (abs_bits(piece[i]) != st.t) continue;
          if (++st.ties_seen == st.ties_needed) st.last_tie = first + i;
        }
        break;
      case Phase::Done:
        break;
    }
  }
  bool observe_again(Stream& st) const {
    switch (st.phase) {
      case Phase::High: {
        if (st.select->next_pass()) {  // the bin of the keep-th largest key holds several keys
          st.h = st.select->bin(0);
          st.phase = Phase::Low;
          const bool covered = st.window && st.window_chosen && st.wlo <= st.h && st.h <= st.whi;
          release(st.prefix);
          if (!covered) {
            release(st.win);
            return true;
          }
          low_from_window(st);
          return observe_again(st);  // the Low pass is complete
        }
        release(st.prefix);
        release(st.win);
        const util::RankCut c = take_cut(st);
        return settle_ties(st, static_cast<int64_t>(c.equal));
      }
      case Phase::Low: {
        st.select->next_pass();
        const util::RankCut c = take_cut(st);
        const int64_t count = static_cast<int64_t>(c.equal);
        if (!st.cand_complete) return settle_ties(st, count);
        // The positions of the keys in bin h are known: find the last tie kept among them.
        const uint32_t l = st.t & 0xFFFFu;
        st.ties_needed = st.keep - st.above;
        if (count > st.ties_needed) {
          for (const uint64_t cand : st.cand) {
            if ((cand & 0xFFFFu) != l) continue;
            if (++st.ties_seen == st.ties_needed) {
              st.last_tie = cand >> 16;
              break;
            }
          }
        } else {
          st.all_ties = true;
        }
        release(st.cand);
        st.phase = Phase::Done;
        return false;
      }
      case Phase::Ties:
      case Phase::Done:
        st.phase = Phase::Done;
        return false;
    }
    return false;
  }
  void apply_observed(const Stream& st, std::span<float> piece, uint64_t first) const {
    if (st.keep >= st.n) return;
    if (st.keep == 0) {
      std::fill(piece.begin(), piece.end(), 0.0f);
      return;
    }
    // Kept: keys above T, and keys equal to T up to the last tie kept (all of them if all_ties).
    const uint64_t last = st.all_ties ? ~uint64_t{0} : st.last_tie;
    keep_above(piece.data(), piece.size(), st.t, first, last);
  }

  // The High pass's share of the window for a piece at `first` (pieces come in index order).
  static void collect_window(Stream& st, std::span<const float> piece, uint64_t first) {
    size_t i = 0;
    if (!st.window_chosen) {
      if (first != st.prefix.size()) {  // not the first pieces in order: no window
        st.window = false;
        release(st.prefix);
        return;
      }
      for (; i < piece.size() && st.prefix.size() < kPrefix; ++i)
        st.prefix.push_back(abs_bits(piece[i]));
      if (st.prefix.size() < kPrefix) return;
      choose_window(st);
    }
    if (!st.window) return;
    const uint32_t lo = st.wlo, span = st.whi - st.wlo;
    for (; i < piece.size(); ++i) {
      const uint32_t b = abs_bits(piece[i]);
      if ((b >> 16) - lo <= span && !keep_in_window(st, first + i, b)) return;
    }
  }
  // Keeps key b (in a window bin) at `index`; false, with the window off (the Low pass then reads
  // the inputs), when the window would hold more than kWindowKeys.
  static bool keep_in_window(Stream& st, uint64_t index, uint32_t b) {
    if (st.win.size() == kWindowKeys) {
      st.window = false;
      release(st.win);
      return false;
    }
    st.win.push_back((index << 32) | b);
    return true;
  }
  // The window's bins from the prefix (its first kPrefix keys), and the prefix's keys inside it.
  static void choose_window(Stream& st) {
    std::vector<uint32_t> hist(size_t{1} << 16, 0);
    for (const uint32_t b : st.prefix) ++hist[b >> 16];
    // The bins holding the ranks within kWindowSd standard deviations of the rank of quantile q
    // in a sample of m keys (√(m·q·(1−q)) for independent keys): wide enough that a tensor like
    // its prefix rarely misses, narrow enough that the window is a bin or two.
    const double m = static_cast<double>(st.prefix.size());
    const double q = static_cast<double>(st.n - st.keep) / static_cast<double>(st.n);
    const double delta = kWindowSd * std::sqrt(m * q * (1.0 - q)) + 1.0;
    const double lo_rank = std::max(0.0, q * m - delta);
    const double hi_rank = std::min(m - 1.0, q * m + delta);
    uint64_t below = 0;
    bool have_lo = false;
    for (uint32_t b = 0; b < hist.size(); ++b) {
      const uint64_t next = below + hist[b];
      if (!have_lo && static_cast<double>(next) > lo_rank) {
        st.wlo = b;
        have_lo = true;
      }
      if (static_cast<double>(next) > hi_rank) {
        st.whi = b;
        break;
      }
      below = next;
    }
    st.window_chosen = true;
    st.win.reserve(kWindowKeys);  // address space only: pages are touched as keys arrive
    const uint32_t lo = st.wlo, span = st.whi - st.wlo;
    for (size_t i = 0; i < st.prefix.size(); ++i) {
      const uint32_t b = st.prefix[i];
      if ((b >> 16) - lo <= span && !keep_in_window(st, i, b)) break;
    }
    release(st.prefix);
  }
  // The Low pass's keys of bin h, in index order: to the select, in tiles, and to the candidate
  // positions while there is room for them.
  class LowKeys {
   public:
    explicit LowKeys(Stream& st) : st_(st) {}
    void add(uint64_t index, uint32_t b) {
      key_[m_++] = b;
      if (st_.cand.size() < kCandidates)
        st_.cand.push_back((index << 16) | (b & 0xFFFFu));
      else
        st_.cand_complete = false;
      if (m_ == kTile) flush();
    }
    void flush() {
      st_.select->add(m_, [&](size_t j) { return key_[j]; });
      m_ = 0;
    }

   private:
    static constexpr size_t kTile = 4096;
    Stream& st_;
    uint32_t key_[kTile];
    size_t m_ = 0;
  };
  // The Low pass from the window's keys of bin h, as the streamed Low pass would find them.
  static void low_from_window(Stream& st) {
    LowKeys low(st);
    for (const uint64_t e : st.win) {
      const uint32_t b = static_cast<uint32_t>(e);
      if ((b >> 16) == st.h) low.add(e >> 32, b);
    }
    low.flush();
    release(st.win);
  }

  // T and the count of keys above it, from the finished select (released).
  static util::RankCut take_cut(Stream& st) {
    const util::RankCut c = st.select->cut(0);
    st.select.reset();
    st.t = c.value;
    st.above = st.n - static_cast<int64_t>(c.below + c.equal);
    return c;
  }
  template <class V>
  static void release(V& v) {
    V().swap(v);
  }
  // T is known and `count` keys equal it: keep them all, or find the cut in one more pass.
  static bool settle_ties(Stream& st, int64_t count) {
    st.ties_needed = st.keep - st.above;  // ≥ 1 by construction
    release(st.cand);
    if (count == st.ties_needed) {
      st.all_ties = true;
      st.phase = Phase::Done;
      return false;
    }
    st.phase = Phase::Ties;
    return true;
  }

  struct Workspace {
    std::vector<uint32_t> keys;
  };

  // The keep-th largest key (1 ≤ keep ≤ n) and the number of keys strictly above it.
  static std::pair<uint32_t, int64_t> threshold(std::span<const float> x, int64_t keep,
                                                Workspace& ws) {
    const int64_t n = static_cast<int64_t>(x.size());
    if (n < kRadixMin) {
      ws.keys.resize(x.size());
      for (size_t i = 0; i < x.size(); ++i) ws.keys[i] = abs_bits(x[i]);
      // Descending order: the element at position keep−1 is the keep-th largest key.
      std::nth_element(ws.keys.begin(), ws.keys.begin() + (keep - 1), ws.keys.end(),
                       std::greater<uint32_t>());
      const uint32_t t = ws.keys[static_cast<size_t>(keep - 1)];
      int64_t above = 0;
      for (float v : x) above += abs_bits(v) > t ? 1 : 0;
      return {t, above};
    }
    // Radix select: the key at ascending rank n − keep.
    util::RankSelect64 select(static_cast<uint64_t>(n), {static_cast<uint64_t>(n - keep)});
    while (select.next_pass()) select.add(x.size(), [&](size_t i) { return abs_bits(x[i]); });
    const util::RankCut c = select.cut(0);
    return {c.value, n - static_cast<int64_t>(c.below + c.equal)};
  }

  void keep_top(std::span<float> x, Workspace& ws) const {
    const int64_t n = static_cast<int64_t>(x.size());
    const int64_t keep = floor_count(1.0 - p_, n);
    if (keep >= n) return;
    if (keep == 0) {
      std::fill(x.begin(), x.end(), 0.0f);
      return;
    }
    const auto [t, above] = threshold(x, keep, ws);
    int64_t ties_left = keep - above;  // ≥ 1 by construction
    for (size_t i = 0; i < x.size(); ++i) {
      const uint32_t b = abs_bits(x[i]);
      if (b > t) continue;
      if (b == t && ties_left > 0) {
        --ties_left;
        continue;
      }
      x[i] = 0.0f;
    }
  }

  double p_;
  bool rows_;
};

// scope=row: each row selects on its own, whole. scope=tensor: streamed by histogram passes
// (Magnitude::Stream); on a whole tensor the in-place radix select gives the same threshold in one
// go.
using MagnitudeRowsOp = CoreOp<WholeTensorOp, Magnitude>;
using MagnitudeTensorOp = ObservingCoreOp<Magnitude, Magnitude::Stream>;

std::unique_ptr<Op> make_magnitude(const ParamReader& r) {
  Magnitude m(r.real("p"), r.choice("scope") == "row");
  if (m.rows()) return std::make_unique<MagnitudeRowsOp>("magnitude", std::move(m));
  return std::make_unique<MagnitudeTensorOp>("magnitude", std::move(m));
}

}  // namespace

OpDecl magnitude_decl() {
  return {"magnitude",
          "keep the ⌊(1−p)·n⌋ largest |Δ| per scope (ties: lower index), zero the rest",
          {ParamSpec::number("p", 0.9, 0.0, 1.0, "fraction of entries zeroed"),
           ParamSpec::choice("scope", {"tensor", "row"}, "tensor",
                             "rank over the whole tensor or within each row")},
          &make_magnitude};
}

}  // namespace deltaedit::edit::detail
