// park_blas_threads: the idle BLAS workers end, and BLAS still computes (restarting them).
#include "linalg/blas.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <vector>

namespace deltaedit::linalg {
namespace {

size_t threads_of_this_process() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

TEST(ParkBlasThreads, LeavesOnlyTheMainThreadAndGemmStillAgreesWithTheDefinition) {
  const size_t before = threads_of_this_process();
  if (!park_blas_threads()) GTEST_SKIP() << "this BLAS has no thread server to park";
  EXPECT_EQ(threads_of_this_process(), 1u) << "threads before: " << before;

  // A product large enough for OpenBLAS to thread: the workers come back and the result is right.
  const int64_t m = 384, n = 320, k = 448;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> a(size_t(m * k)), b(size_t(k * n)), c(size_t(m * n), 0.0f);
  for (auto& x : a) x = u(rng);
  for (auto& x : b) x = u(rng);
  gemm(false, false, m, n, k, a.data(), m, b.data(), k, c.data(), m);
  double worst = 0;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double ref = 0;
      for (int64_t l = 0; l < k; ++l)
        ref += double(a[size_t(l * m + i)]) * double(b[size_t(j * k + l)]);
      worst = std::max(worst, std::abs(ref - double(c[size_t(j * m + i)])));
    }
  // |terms| ≤ 1, k = 448 of them: f32 accumulation error well under 1e-3.
  EXPECT_LT(worst, 1e-3);
  // Parking again after a threaded call works the same way.
  EXPECT_TRUE(park_blas_threads());
  EXPECT_EQ(threads_of_this_process(), 1u);
}

}  // namespace
}  // namespace deltaedit::linalg
