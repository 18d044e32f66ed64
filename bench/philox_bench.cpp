// Keyed Philox throughput on one core (Google Benchmark).
//
//   words/s     32-bit Philox words (four per block) from util::philox_blocks
//   draws/s     Bernoulli selections (one block each, words 0–1, integer comparison) from
//               util::bernoulli_select, the mask of dare/drop/signflip
//   *_scalar    the same values one counter at a time through util::KeyedRng, for comparison
// The batched benchmarks run once per kernel this CPU has (generic, avx2, avx512; the label says
// which; the widest is what the ops use).
//
// Every batch is checked against the scalar generator once before timing, so a fast wrong
// kernel cannot report a figure. Target: ≥ 1 G words/s per core.
// Usage: philox_bench [--benchmark_min_time=0.5s] [Google Benchmark flags]
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "util/philox.h"

using namespace deltaedit::util;

namespace {

constexpr size_t kN = 4096;  // counters per call, as the ops draw them
const PhiloxKey kKey = rng_key(1, "model.layers.0.mlp.up_proj.weight", 0);

void check_or_die(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "philox_bench: %s differs from the scalar generator\n", what);
    std::exit(1);
  }
}

PhiloxIsa isa_of(const benchmark::State& state) { return static_cast<PhiloxIsa>(state.range(0)); }

void kernels(benchmark::internal::Benchmark* b) {
  for (const PhiloxIsa isa : {PhiloxIsa::Generic, PhiloxIsa::Avx2, PhiloxIsa::Avx512})
    if (philox_isa_available(isa)) b->Arg(static_cast<int>(isa));
}

void BM_PhiloxBlocks(benchmark::State& state) {
  const PhiloxIsa isa = isa_of(state);
  state.SetLabel(philox_isa_name(isa));
  std::vector<uint32_t> w0(kN), w1(kN), w2(kN), w3(kN);
  const KeyedRng rng(kKey);
  philox_blocks_on(isa, kKey, 12345, 0, kN, w0.data(), w1.data(), w2.data(), w3.data());
  for (size_t j = 0; j < kN; ++j) {
    const PhiloxCounter c = rng.words(12345 + j);
    check_or_die(c[0] == w0[j] && c[1] == w1[j] && c[2] == w2[j] && c[3] == w3[j], "philox_blocks");
  }
  uint64_t first = 0;
  for (auto _ : state) {
    philox_blocks_on(isa, kKey, first, 0, kN, w0.data(), w1.data(), w2.data(), w3.data());
    benchmark::DoNotOptimize(w0.data());
    benchmark::DoNotOptimize(w3.data());
    benchmark::ClobberMemory();
    first += kN;
  }
  state.counters["words/s"] =
      benchmark::Counter(double(state.iterations()) * kN * 4, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PhiloxBlocks)->Apply(kernels);

void BM_PhiloxBlocksScalar(benchmark::State& state) {
  std::vector<uint32_t> w(4 * kN);
  const KeyedRng rng(kKey);
  uint64_t first = 0;
  for (auto _ : state) {
    for (size_t j = 0; j < kN; ++j) {
      const PhiloxCounter c = rng.words(first + j);
      for (int k = 0; k < 4; ++k) w[4 * j + k] = c[k];
    }
    benchmark::DoNotOptimize(w.data());
    benchmark::ClobberMemory();
    first += kN;
  }
  state.counters["words/s"] =
      benchmark::Counter(double(state.iterations()) * kN * 4, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_PhiloxBlocksScalar);

void BM_BernoulliSelect(benchmark::State& state) {
  const PhiloxIsa isa = isa_of(state);
  state.SetLabel(philox_isa_name(isa));
  std::vector<uint32_t> sel(kN);
  const KeyedRng rng(kKey);
  const double p = 0.9;
  const uint64_t t = KeyedRng::uniform_threshold(p);
  bernoulli_select_on(isa, kKey, 777, kN, t, sel.data());
  for (size_t j = 0; j < kN; ++j)
    check_or_die((sel[j] != 0) == (rng.uniform(777 + j) < p), "bernoulli_select");
  uint64_t first = 0;
  for (auto _ : state) {
    bernoulli_select_on(isa, kKey, first, kN, t, sel.data());
    benchmark::DoNotOptimize(sel.data());
    benchmark::ClobberMemory();
    first += kN;
  }
  state.counters["draws/s"] =
      benchmark::Counter(double(state.iterations()) * kN, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_BernoulliSelect)->Apply(kernels);

void BM_BernoulliScalar(benchmark::State& state) {
  std::vector<uint32_t> sel(kN);
  const KeyedRng rng(kKey);
  const double p = 0.9;
  uint64_t first = 0;
  for (auto _ : state) {
    for (size_t j = 0; j < kN; ++j) sel[j] = rng.uniform(first + j) < p ? ~0u : 0u;
    benchmark::DoNotOptimize(sel.data());
    benchmark::ClobberMemory();
    first += kN;
  }
  state.counters["draws/s"] =
      benchmark::Counter(double(state.iterations()) * kN, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_BernoulliScalar);

}  // namespace

BENCHMARK_MAIN();
