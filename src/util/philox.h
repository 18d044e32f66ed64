// Philox4x32-10 counter-based generator (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC'11) and the keyed streams every random edit draws from.
//
// A draw is a pure function of (key, element index, lane): the same element gets the same value
// for any thread count, chunking, shard layout or machine. Keys come from
// rng_key(seed, tensor name, op index); lanes separate independent uses within one op.
#pragma once
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace deltaedit::util {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Ten rounds of Philox4x32 with the Random123 multipliers and Weyl key increments.
constexpr PhiloxCounter philox4x32_10(PhiloxCounter c, PhiloxKey k) noexcept {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += kW0;
      k[1] += kW1;
    }
    const uint64_t p0 = uint64_t{kM0} * c[0];
    const uint64_t p1 = uint64_t{kM1} * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
  }
  return c;
}

// Philox4x32-10 on kPhiloxBatch consecutive counters {first + j, lane, 0} at once, returning
// words 0 and 1 of each block: the same values as philox4x32_10 one counter at a time, laid out
// lane by lane (independent counters). The portable batch; hot loops may use a SIMD version of
// the same rounds (edit/dare.cpp).
inline constexpr size_t kPhiloxBatch = 8;
inline void philox4x32_10_w01(PhiloxKey k, uint64_t first, uint32_t lane,
                              uint32_t (&w0)[kPhiloxBatch], uint32_t (&w1)[kPhiloxBatch]) noexcept {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0[kPhiloxBatch], c1[kPhiloxBatch], c2[kPhiloxBatch], c3[kPhiloxBatch];
  for (size_t j = 0; j < kPhiloxBatch; ++j) {
    const uint64_t i = first + j;
    c0[j] = static_cast<uint32_t>(i);
    c1[j] = static_cast<uint32_t>(i >> 32);
    c2[j] = lane;
    c3[j] = 0u;
  }
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k[0] += kW0;
      k[1] += kW1;
    }
    for (size_t j = 0; j < kPhiloxBatch; ++j) {
      const uint64_t p0 = uint64_t{kM0} * c0[j];
      const uint64_t p1 = uint64_t{kM1} * c2[j];
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[j] ^ k[0];
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[j] ^ k[1];
      c1[j] = static_cast<uint32_t>(p1);
      c3[j] = static_cast<uint32_t>(p0);
      c0[j] = n0;
      c2[j] = n2;
    }
  }
  for (size_t j = 0; j < kPhiloxBatch; ++j) {
    w0[j] = c0[j];
    w1[j] = c1[j];
  }
}

// FNV-1a, 64 bit: a stable hash of tensor names (independent of the standard library).
constexpr uint64_t fnv1a64(std::string_view s) noexcept {
  uint64_t h = 0xCBF29CE484222325ull;
  for (char ch : s) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001B3ull;
  }
  return h;
}

// SplitMix64 finaliser: a bijective 64-bit mixer.
constexpr uint64_t splitmix64(uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The Philox key for one (run seed, tensor, op position): each part is mixed in turn, so any
// change of seed, name or op index gives an unrelated stream.
constexpr PhiloxKey rng_key(uint64_t seed, std::string_view tensor_name,
                            uint32_t op_index) noexcept {
  uint64_t h = splitmix64(seed);
  h = splitmix64(h ^ fnv1a64(tensor_name));
  h = splitmix64(h ^ (0xD6E8FEB86659FD93ull * (uint64_t{op_index} + 1)));
  return {static_cast<uint32_t>(h), static_cast<uint32_t>(h >> 32)};
}

// Draws for element i of one keyed stream. Counter = {i low, i high, lane, 0}.
class KeyedRng {
 public:
  constexpr explicit KeyedRng(PhiloxKey key) noexcept : key_(key) {}
  KeyedRng(uint64_t seed, std::string_view tensor_name, uint32_t op_index) noexcept
      : key_(rng_key(seed, tensor_name, op_index)) {}

  constexpr PhiloxKey key() const noexcept { return key_; }

  constexpr PhiloxCounter words(uint64_t i, uint32_t lane = 0) const noexcept {
    return philox4x32_10({static_cast<uint32_t>(i), static_cast<uint32_t>(i >> 32), lane, 0u},
                         key_);
  }

  // Uniform in [0, 1) with 53 random bits (words 0 and 1).
  double uniform(uint64_t i, uint32_t lane = 0) const noexcept {
    const PhiloxCounter w = words(i, lane);
    return static_cast<double>(bits53(w[0], w[1])) * 0x1.0p-53;
  }

  // uniform(i, lane) < p  ⇔  (53-bit word of element i) < uniform_threshold(p): the draw
  // x·2^-53 < p holds exactly when the integer x is below ⌈p·2^53⌉ (p·2^53 is exact). p in [0, 1].
  static uint64_t uniform_threshold(double p) noexcept {
    return static_cast<uint64_t>(std::ceil(p * 0x1.0p53));
  }
  // The 53-bit integer behind uniform(): uniform(i) == uniform_bits(w0, w1) · 2^-53.
  static constexpr uint64_t uniform_bits(uint32_t w0, uint32_t w1) noexcept {
    return bits53(w0, w1);
  }

  // Uniform in [0, 1) with 24 random bits (word 0).
  float uniform_float(uint64_t i, uint32_t lane = 0) const noexcept {
    return static_cast<float>(words(i, lane)[0] >> 8) * 0x1.0p-24f;
  }

  // Standard normal by Box–Muller: u1 in (0, 1] from words 0–1, u2 in [0, 1) from words 2–3.
  double normal(uint64_t i, uint32_t lane = 0) const noexcept {
    const PhiloxCounter w = words(i, lane);
    const double u1 = static_cast<double>(bits53(w[0], w[1]) + 1) * 0x1.0p-53;
    const double u2 = static_cast<double>(bits53(w[2], w[3])) * 0x1.0p-53;
    constexpr double kTwoPi = 6.283185307179586476925286766559;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2);
  }

  // Integer in [0, bound) (bound ≥ 1) by the multiply-shift map of a 64-bit word; the bias is
  // below bound / 2^64.
  uint64_t below(uint64_t i, uint64_t bound, uint32_t lane = 0) const noexcept {
    const PhiloxCounter w = words(i, lane);
    const uint64_t x = (uint64_t{w[0]} << 32) | w[1];
    return static_cast<uint64_t>((static_cast<unsigned __int128>(x) * bound) >> 64);
  }

 private:
  static constexpr uint64_t bits53(uint32_t a, uint32_t b) noexcept {
    return ((uint64_t{a} << 32) | b) >> 11;
  }
  PhiloxKey key_;
};

// Batched keyed streams (util/philox_batch.cpp; AVX-512 or AVX2 where the CPU has it, several
// blocks in flight). Both give exactly the scalar generator's words and decisions.
//
// Words of Philox4x32-10 on the counters {first + j, lane, 0} under `key`, j < n: w0[j] ..
// w3[j] equal KeyedRng(key).words(first + j, lane). w2 and w3 may be null.
void philox_blocks(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint32_t* w0,
                   uint32_t* w1, uint32_t* w2, uint32_t* w3) noexcept;
// Bernoulli selections of lane 0: sel[j] = ~0u if KeyedRng(key).uniform(first + j) < p, else 0,
// for j < n, where threshold = KeyedRng::uniform_threshold(p) (an integer comparison).
void bernoulli_select(PhiloxKey key, uint64_t first, size_t n, uint64_t threshold,
                      uint32_t* sel) noexcept;
// The same on any lane: sel[j] = ~0u if KeyedRng(key).uniform(first + j, lane) < p, else 0.
void bernoulli_lane(PhiloxKey key, uint64_t first, uint32_t lane, size_t n, uint64_t threshold,
                    uint32_t* sel) noexcept;

// The kernels the batched streams can run (tests run each one the CPU has; the default is the
// widest). Every kernel gives the same words.
enum class PhiloxIsa { Generic, Avx2, Avx512 };
bool philox_isa_available(PhiloxIsa isa) noexcept;
PhiloxIsa philox_default_isa() noexcept;
const char* philox_isa_name(PhiloxIsa isa) noexcept;
// philox_blocks and bernoulli_select on one kernel; an unavailable one falls back to Generic.
void philox_blocks_on(PhiloxIsa isa, PhiloxKey key, uint64_t first, uint32_t lane, size_t n,
                      uint32_t* w0, uint32_t* w1, uint32_t* w2, uint32_t* w3) noexcept;
void bernoulli_select_on(PhiloxIsa isa, PhiloxKey key, uint64_t first, size_t n, uint64_t threshold,
                         uint32_t* sel) noexcept;
void bernoulli_lane_on(PhiloxIsa isa, PhiloxKey key, uint64_t first, uint32_t lane, size_t n,
                       uint64_t threshold, uint32_t* sel) noexcept;

}  // namespace deltaedit::util
