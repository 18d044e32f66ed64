// Unicode canonical composition (NFC): canonical decomposition, canonical ordering, composition.
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <vector>

#include "text/tokenizer_detail.h"

namespace deltaedit::text::detail {

namespace {

struct CccEntry {
  char32_t cp;
  uint8_t ccc;
};
struct DecompEntry {
  char32_t cp, first, second;  // second == 0: singleton decomposition
};
struct CompEntry {
  char32_t first, second, composite;
};

#include "text/tokenizer_nfc_data.inc"

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint8_t ccc_of(char32_t cp) {
  if (cp < 0x300) return 0;
  auto it = std::lower_bound(std::begin(kCcc), std::end(kCcc), cp,
                             [](const CccEntry& e, char32_t c) { return e.cp < c; });
  return (it != std::end(kCcc) && it->cp == cp) ? it->ccc : 0;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (cp >= 0xC0) {
    auto it = std::lower_bound(std::begin(kDecomp), std::end(kDecomp), cp,
                               [](const DecompEntry& e, char32_t c) { return e.cp < c; });
    if (it != std::end(kDecomp) && it->cp == cp) {
      decompose(it->first, out);
      if (it->second) decompose(it->second, out);
      return;
    }
  }
  out.push_back(cp);
}

bool compose(char32_t a, char32_t b, char32_t& result) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    result = kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    return true;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    result = a + (b - kTBase);
    return true;
  }
  auto it =
      std::lower_bound(std::begin(kComp), std::end(kComp), std::pair{a, b},
                       [](const CompEntry& e, const std::pair<char32_t, char32_t>& k) {
                         return e.first < k.first || (e.first == k.first && e.second < k.second);
                       });
  if (it != std::end(kComp) && it->first == a && it->second == b) {
    result = it->composite;
    return true;
  }
  return false;
}

}  // namespace

std::string nfc(std::string_view s) {
  bool ascii = true;
  for (char c : s) ascii &= static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(s);

  std::vector<char32_t> cps;
  cps.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) decompose(utf8_next(s, i), cps);

  // Canonical ordering: stable sort of each run of non-starters by combining class.
  for (std::size_t i = 0; i < cps.size();) {
    if (ccc_of(cps[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < cps.size() && ccc_of(cps[j]) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(cps.begin() + static_cast<long>(i), cps.begin() + static_cast<long>(j),
                       [](char32_t a, char32_t b) { return ccc_of(a) < ccc_of(b); });
    i = j;
  }

  // Canonical composition.
  std::vector<char32_t> out;
  out.reserve(cps.size());
  long starter = -1;
  for (char32_t c : cps) {
    const uint8_t cc = ccc_of(c);
    if (starter >= 0) {
      const bool adjacent = out.size() == static_cast<std::size_t>(starter) + 1;
      const int last_cc = adjacent ? -1 : ccc_of(out.back());
      char32_t composite;
      if ((adjacent || (last_cc != 0 && last_cc < cc)) &&
          compose(out[static_cast<std::size_t>(starter)], c, composite)) {
        out[static_cast<std::size_t>(starter)] = composite;
        continue;
      }
    }
    if (cc == 0) starter = static_cast<long>(out.size());
    out.push_back(c);
  }
  std::string r;
  r.reserve(s.size());
  for (char32_t c : out) utf8_append(r, c);
  return r;
}

}  // namespace deltaedit::text::detail
