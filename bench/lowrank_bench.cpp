// lowrank op: randomized vs exact SVD on one matrix with a decaying spectrum.
// Usage: lowrank_bench [--rows N] [--cols M] [--rank R] [--variant KEY=V,...]... [--json]
// Each --variant runs method=randomized once more with extra op keys (e.g. power_iters=2).
// The matrix is A = G1·diag(σ)·G2ᵀ/√(rows·cols) plus a small full-rank noise floor, G1, G2
// Gaussian with an inner dimension of min(rows, cols)/4 and σ_k = 1/(1+k/16): a few strong
// directions and a long tail, the shape of a fine-tuning delta. Both methods run through the edit-op registry exactly
// as `deltaedit edit --op lowrank:...` calls them; the figure of merit is ‖A − A_r‖_F / ‖A‖_F.
#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <Eigen/Dense>

#include "edit/op.h"

using namespace deltaedit;

namespace {

// Deterministic Gaussian matrix.
Eigen::MatrixXf gaussian(int64_t rows, int64_t cols, uint64_t seed) {
  Eigen::MatrixXf m(rows, cols);
  // Box–Muller on a simple LCG stream: deterministic and fast; quality is ample for a test matrix.
  uint64_t state = 0x9E3779B97F4A7C15ull ^ seed;
  auto uniform = [&]() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (double((state >> 11) & ((1ull << 53) - 1)) + 0.5) / double(1ull << 53);
  };
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t i = 0; i < rows; i += 2) {
      const double u1 = uniform(), u2 = uniform();
      const double r = std::sqrt(-2.0 * std::log(u1)), t = 6.283185307179586 * u2;
      m(i, j) = float(r * std::cos(t));
      if (i + 1 < rows) m(i + 1, j) = float(r * std::sin(t));
    }
  return m;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// CPU time of the whole process (all threads: OpenBLAS may run LAPACK's products on its own worker
// threads), which is robust to a loaded machine where wall time is not.
double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 4096, cols = 4096, rank = -1;
  bool as_json = false;
  std::vector<std::string> variants;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> long {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return std::strtol(argv[++i], nullptr, 10);
    };
    if (a == "--rows") rows = next();
    else if (a == "--cols") cols = next();
    else if (a == "--rank") rank = next();
    else if (a == "--json") as_json = true;
    else if (a == "--variant" && i + 1 < argc) variants.push_back(argv[++i]);
    else {
      std::fprintf(stderr, "usage: lowrank_bench [--rows N] [--cols M] [--rank R] [--variant KEY=V,...]... [--json]\n");
      return 2;
    }
  }
  const int64_t kmin = std::min(rows, cols);
  if (rank < 0) rank = kmin / 10;
  const int64_t inner = std::max<int64_t>(1, kmin / 4);

  // A = G1·diag(σ)·G2ᵀ (scaled) + noise, stored row-major as the op expects.
  auto t_gen = std::chrono::steady_clock::now();
  Eigen::MatrixXf g1 = gaussian(rows, inner, 1), g2 = gaussian(cols, inner, 2);
  for (int64_t k = 0; k < inner; ++k) g1.col(k) *= float(1.0 / (1.0 + double(k) / 16.0));
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMajor a = (g1 * g2.transpose()) / float(std::sqrt(double(rows) * double(cols)));
  a += gaussian(rows, cols, 3) * float(2e-3 / std::sqrt(double(kmin)));
  const double gen_s = seconds_since(t_gen);
  const std::vector<float> original(a.data(), a.data() + a.size());
  double norm2 = 0;
  for (float v : original) norm2 += double(v) * double(v);

  const int64_t shape[2] = {rows, cols};
  struct Result {
    double seconds = 0, cpu_seconds = 0, rel_err = 0;
  };
  auto run = [&](const std::string& keys) {
    auto op = edit::make_op(edit::parse_op_spec("lowrank:rank=" + std::to_string(rank) + "," + keys));
    std::vector<float> d = original;
    edit::TensorContext ctx;
    ctx.name = "bench.weight";
    ctx.shape = shape;
    ctx.seed = 7;
    auto t0 = std::chrono::steady_clock::now();
    const double c0 = process_cpu_seconds();
    op->apply(d, ctx);
    Result r;
    r.cpu_seconds = process_cpu_seconds() - c0;
    r.seconds = seconds_since(t0);
    double e2 = 0;
    for (size_t i = 0; i < d.size(); ++i) {
      const double e = double(d[i]) - double(original[i]);
      e2 += e * e;
    }
    r.rel_err = std::sqrt(e2 / norm2);
    return r;
  };
  std::vector<std::pair<std::string, Result>> results;  // [0] exact, then randomized runs
  results.emplace_back("method=exact", run("method=exact"));
  results.emplace_back("method=randomized", run("method=randomized"));
  for (const auto& v : variants) results.emplace_back("method=randomized," + v, run("method=randomized," + v));
  const Result& ex = results[0].second;

  if (as_json) {
    std::printf("{\"rows\": %lld, \"cols\": %lld, \"rank\": %lld, \"gen_seconds\": %.3f, \"runs\": [",
                (long long)rows, (long long)cols, (long long)rank, gen_s);
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& [keys, r] = results[i];
      std::printf("%s{\"keys\": \"%s\", \"seconds\": %.3f, \"cpu_seconds\": %.3f, \"rel_err\": %.6g, "
                  "\"speedup\": %.3f, \"cpu_speedup\": %.3f, \"err_ratio\": %.6f}",
                  i ? ", " : "", keys.c_str(), r.seconds, r.cpu_seconds, r.rel_err, ex.seconds / r.seconds,
                  ex.cpu_seconds / r.cpu_seconds, r.rel_err / ex.rel_err);
    }
    std::printf("]}\n");
  } else {
    std::printf("lowrank %lldx%lld rank %lld (test matrix built in %.1f s)\n", (long long)rows, (long long)cols,
                (long long)rank, gen_s);
    for (const auto& [keys, r] : results)
      std::printf("  %-40s %8.2f s wall %8.2f s CPU  rel. error %.6g  speed-up %.2fx (CPU %.2fx)  error ratio %.4f\n",
                  keys.c_str(), r.seconds, r.cpu_seconds, r.rel_err, ex.seconds / r.seconds,
                  ex.cpu_seconds / r.cpu_seconds, r.rel_err / ex.rel_err);
  }
  return 0;
}
