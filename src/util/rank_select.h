// Radix selection of the keys at given ascending ranks of a sequence of 32-bit keys, by histogram
// passes over the key bits, without copying or reordering the keys. The keys may be handed in any
// pieces (a whole tensor, or blocks streamed from disk); only the histograms are held.
//
//   RankSelect s(n, {r0, r1, ...});
//   while (s.next_pass()) s.add(count, key) for pieces covering the n keys;
//   s.cut(j)  // the key at ascending rank r_j, with the counts of keys below and equal to it
//
// Pass 1 counts the high 16 key bits (in interleaved stripes, added up at its end), and keeps the
// OR and the AND of the low 16 bits of every key: it gives the high bin holding each rank and, when
// every key has the same low bits (the f32 image of a bf16 value has them all zero), the key
// itself. Otherwise pass 2 counts the low 16 bits of the keys inside each rank's bin. RankSelect
// counts in 32 bits (n < 2^32, the histograms stay in cache), RankSelect64 in 64.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace deltaedit::util {

struct RankCut {
  uint32_t value = 0;  // the key at the rank
  uint64_t below = 0;  // keys < value
  uint64_t equal = 0;  // keys == value
};

template <class Count>
class BasicRankSelect {
 public:
  static constexpr size_t kBins = size_t{1} << 16;
  static constexpr uint64_t kMaxKeys = Count(~Count{0});

  // Every rank must be below n (n ≤ kMaxKeys). With per_bin, pass 1 also keeps the OR and the
  // AND of the low bits in every high bin, so that a rank whose bin holds a single key value (f32
  // zeros, say) is known after pass 1 too (two more stores per key).
  BasicRankSelect(uint64_t n, std::vector<uint64_t> ranks, bool per_bin = false)
      : n_(n), ranks_(std::move(ranks)), per_bin_(per_bin) {
    cuts_.resize(ranks_.size());
    bin_of_.resize(ranks_.size());
    known_.assign(ranks_.size(), false);
  }

  // Call before each pass; false once every cut is known (then cut() is valid).
  bool next_pass() {
    switch (phase_) {
      case Phase::Start:
        high_.assign(kBins * kStripes, 0);
        if (per_bin_) {
          bin_or_.assign(kBins * kStripes, 0);
          bin_and_.assign(kBins * kStripes, 0xFFFF);
        }
        phase_ = Phase::High;
        return true;
      case Phase::High:
        return end_high();
      case Phase::Low:
        end_low();
        return false;
      case Phase::Done:
        return false;
    }
    return false;
  }
  // The pass in progress needs keys (false when done).
  bool active() const { return phase_ == Phase::High || phase_ == Phase::Low; }

  // Pass 1 counts in kStripes interleaved histograms (bin b's counters side by side), key j going
  // to stripe j mod kStripes: neighbouring keys in the same bin (most keys of a tensor fall in
  // few bins) then update different counters, instead of each increment waiting for the last
  // one's store. The stripes are added up when the pass ends.
  static constexpr size_t kStripes = 4;

  // Adds key(j) for j < count to the pass in progress.
  template <class Key>
  void add(size_t count, Key&& key) {
    if (phase_ == Phase::High && per_bin_) {
      Count* h = high_.data();
      uint16_t* bo = bin_or_.data();
      uint16_t* ba = bin_and_.data();
      for (size_t j = 0; j < count; ++j) {
        const uint32_t k = key(j);
        const size_t b = size_t(k >> 16) * kStripes + (j % kStripes);
        ++h[b];
        bo[b] = static_cast<uint16_t>(bo[b] | k);
        ba[b] = static_cast<uint16_t>(ba[b] & k);
      }
    } else if (phase_ == Phase::High) {
      uint32_t o = low_or_, a = low_and_;
      Count* h = high_.data();
      for (size_t j = 0; j < count; ++j) {
        const uint32_t k = key(j);
        ++h[size_t(k >> 16) * kStripes + (j % kStripes)];
        o |= k;
        a &= k;
      }
      low_or_ = o;
      low_and_ = a;
    } else if (phase_ == Phase::Low) {
      if (bins_.size() == 1) {
        const uint32_t b = bins_[0];
        Count* l = low_[0].data();
        for (size_t j = 0; j < count; ++j) {
          const uint32_t k = key(j);
          if ((k >> 16) == b) ++l[k & 0xFFFFu];
        }
      } else {
        for (size_t j = 0; j < count; ++j) {
          const uint32_t k = key(j);
          for (size_t q = 0; q < bins_.size(); ++q)
            if ((k >> 16) == bins_[q]) ++low_[q][k & 0xFFFFu];
        }
      }
    }
  }

  const RankCut& cut(size_t j) const { return cuts_[j]; }
  // After pass 1: the high bin (key >> 16) holding rank j.
  uint32_t bin(size_t j) const { return cuts_[j].value >> 16; }
  uint64_t size() const { return n_; }

  // Bytes held at most (the histograms).
  static uint64_t bytes(size_t ranks, bool per_bin = false) {
    return uint64_t(kBins) * (sizeof(Count) * (kStripes + ranks) + (per_bin ? 4 * kStripes : 0));
  }

 private:
  enum class Phase { Start, High, Low, Done };

  bool end_high() {
    // The stripes added up (OR and AND over the stripes: an empty stripe holds 0 and 0xFFFF).
    for (size_t b = 0; b < kBins; ++b) {
      Count c = 0;
      for (size_t q = 0; q < kStripes; ++q) c += high_[b * kStripes + q];
      high_[b] = c;
      if (per_bin_) {
        uint16_t o = 0, a = 0xFFFF;
        for (size_t q = 0; q < kStripes; ++q) {
          o = static_cast<uint16_t>(o | bin_or_[b * kStripes + q]);
          a = static_cast<uint16_t>(a & bin_and_[b * kStripes + q]);
        }
        bin_or_[b] = o;
        bin_and_[b] = a;
      }
    }
    bool need_low = false;
    for (size_t j = 0; j < ranks_.size(); ++j) {
      const uint64_t r = ranks_[j];
      uint32_t h = 0;
      uint64_t below = 0;
      while (h + 1 < kBins && below + high_[h] <= r)
        below += high_[h++];  // stays in range if fewer keys came
      cuts_[j].below = below;
      cuts_[j].value = h << 16;
      // The bin holds one key value when every key has the same low bits, or every key in it.
      const bool one =
          per_bin_ ? bin_or_[h] == bin_and_[h] : (low_or_ & 0xFFFFu) == (low_and_ & 0xFFFFu);
      if (one) {
        cuts_[j].value |= per_bin_ ? bin_or_[h] : (low_or_ & 0xFFFFu);
        cuts_[j].equal = high_[h];
        known_[j] = true;
        continue;
      }
      need_low = true;
      const auto it = std::find(bins_.begin(), bins_.end(), h);
      bin_of_[j] = size_t(it - bins_.begin());
      if (it == bins_.end()) bins_.push_back(h);
    }
    std::vector<Count>().swap(high_);
    std::vector<uint16_t>().swap(bin_or_);
    std::vector<uint16_t>().swap(bin_and_);
    if (!need_low) {
      phase_ = Phase::Done;
      return false;
    }
    low_.assign(bins_.size(), std::vector<Count>(kBins, 0));
    phase_ = Phase::Low;
    return true;
  }

  void end_low() {
    if (!low_.empty()) {
      for (size_t j = 0; j < ranks_.size(); ++j) {
        if (known_[j]) continue;  // known after pass 1
        const std::vector<Count>& l = low_[bin_of_[j]];
        const uint64_t r = ranks_[j];
        uint64_t below = cuts_[j].below;
        uint32_t lo = 0;
        while (lo + 1 < kBins && below + l[lo] <= r) below += l[lo++];
        cuts_[j].value = (bins_[bin_of_[j]] << 16) | lo;
        cuts_[j].below = below;
        cuts_[j].equal = l[lo];
      }
    }
    std::vector<std::vector<Count>>().swap(low_);
    phase_ = Phase::Done;
  }

  uint64_t n_;
  std::vector<uint64_t> ranks_;
  std::vector<RankCut> cuts_;
  Phase phase_ = Phase::Start;
  std::vector<Count> high_;
  bool per_bin_ = false;
  std::vector<bool> known_;
  uint32_t low_or_ = 0, low_and_ = 0xFFFFFFFFu;
  std::vector<uint16_t> bin_or_, bin_and_;  // per_bin: OR and AND of the low bits per bin
  std::vector<uint32_t> bins_;              // distinct high bins of the ranks needing pass 2
  std::vector<size_t> bin_of_;              // rank j → index into bins_
  std::vector<std::vector<Count>> low_;
};

using RankSelect = BasicRankSelect<uint32_t>;
using RankSelect64 = BasicRankSelect<uint64_t>;

}  // namespace deltaedit::util
