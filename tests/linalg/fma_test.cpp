// The whole build compiles without floating-point contraction: reconstruct_lowrank built with
// -mfma -O3 writes the same bytes as the default build, so a pack applies to the same checkpoint
// on every x86-64 machine. A copy built with contraction allowed shows the input detects fusion.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../engine/engine_test_util.h"
#include "fma_input.h"

using namespace deltaedit;
using namespace deltaedit::testing;

namespace {

std::vector<float> default_build() {
  const auto f = contraction_probe_factors();
  std::vector<float> out(size_t(f.rows * f.cols));
  linalg::reconstruct_lowrank(f, out);
  return out;
}

std::vector<float> run_probe(const char* exe) {
  TempDir t;
  const fs::path out = t / "bytes";
  const std::string cmd = std::string(exe) + " " + out.string();
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const std::string b = read_file(out);
  std::vector<float> v(b.size() / sizeof(float));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(float));
  return v;
}

size_t differing(const std::vector<float>& a, const std::vector<float>& b) {
  size_t n = a.size() == b.size() ? 0 : std::max(a.size(), b.size());
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    n += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return n;
}

bool cpu_has_fma() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

TEST(Contraction, FmaBuildOfReconstructLowrankWritesTheDefaultBytes) {
#ifndef DELTAEDIT_FMA_PROBE
  GTEST_SKIP() << "the compiler does not accept -mfma (not an x86-64 toolchain)";
#else
  if (!cpu_has_fma()) GTEST_SKIP() << "this CPU has no FMA unit: the -mfma build cannot run here";
  const auto ref = default_build();
  const auto fma = run_probe(DELTAEDIT_FMA_PROBE);
  ASSERT_EQ(fma.size(), ref.size());
  EXPECT_EQ(differing(fma, ref), 0u) << "of " << ref.size() << " values";
#endif
}

// The control: with contraction allowed, GCC fuses the multiply-add and other bytes come out; if
// it did not, the test above would prove nothing about this input.
TEST(Contraction, ContractedBuildDiffersSoTheInputDetectsFusion) {
#ifndef DELTAEDIT_FMA_PROBE_CONTRACTED
  GTEST_SKIP() << "the compiler does not accept -mfma (not an x86-64 toolchain)";
#else
  if (!cpu_has_fma()) GTEST_SKIP() << "this CPU has no FMA unit: the -mfma build cannot run here";
#if defined(__clang__)
  GTEST_SKIP() << "clang: reconstruct_lowrank's own `fp contract(off)` pragma overrides the flag";
#else
  const auto ref = default_build();
  const auto fused = run_probe(DELTAEDIT_FMA_PROBE_CONTRACTED);
  ASSERT_EQ(fused.size(), ref.size());
  EXPECT_GT(differing(fused, ref), ref.size() / 10) << "of " << ref.size() << " values";
#endif
#endif
}
