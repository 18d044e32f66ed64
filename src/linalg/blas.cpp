#include "linalg/blas.h"

#include <cblas.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "util/error.h"

extern "C" {
// LAPACK (Fortran interface, provided by the BLAS library).
void sgeqrf_(const int* m, const int* n, float* a, const int* lda, float* tau, float* work,
             const int* lwork, int* info);
// The trailing size_t is the hidden length of the character argument (gfortran's calling
// convention).
void dgesdd_(const char* jobz, const int* m, const int* n, double* a, const int* lda, double* s,
             double* u, const int* ldu, double* vt, const int* ldvt, double* work, const int* lwork,
             int* iwork, int* info, size_t jobz_len);
void sorgqr_(const int* m, const int* n, const int* k, float* a, const int* lda, const float* tau,
             float* work, const int* lwork, int* info);
// OpenBLAS's thread-server shutdown (what its fork handler calls); weak, since other BLAS builds,
// and OpenBLAS's serial one, do not have it.
int blas_thread_shutdown_(void) __attribute__((weak));
}

namespace deltaedit::linalg {
namespace {

int checked_int(int64_t v, const char* what) {
  if (v < 0 || v > int64_t{0x7FFFFFFF})
    throw Error(ErrorKind::Unsupported,
                std::string("matrix dimension out of the BLAS range: ") + what);
  return static_cast<int>(v);
}

// LAPACK's optimal workspace (returned as a floating value by a size query), checked to fit an int.
int workspace_size(double query) {
  if (!(query >= 0.0) || query >= double(0x7FFFFFFF))
    throw Error(ErrorKind::Unsupported, "matrix too large for the LAPACK workspace (" +
                                            std::to_string(query) + " elements)");
  return static_cast<int>(query) + 1;
}

std::mutex serial_mu;
int serial_count = 0, saved_threads = 1;

}  // namespace

bool park_blas_threads() {
  std::lock_guard<std::mutex> g(serial_mu);
  if (blas_thread_shutdown_ == nullptr) return false;
  blas_thread_shutdown_();
  return true;
}

SerialBlas::SerialBlas() {
  std::lock_guard<std::mutex> g(serial_mu);
  if (serial_count++ == 0) {
    saved_threads = openblas_get_num_threads();
    openblas_set_num_threads(1);
  }
}

SerialBlas::~SerialBlas() {
  std::lock_guard<std::mutex> g(serial_mu);
  if (--serial_count == 0) openblas_set_num_threads(saved_threads);
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc) {
  cblas_sgemm(CblasColMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, checked_int(m, "m"), checked_int(n, "n"),
              checked_int(k, "k"), 1.0f, a, checked_int(lda, "lda"), b, checked_int(ldb, "ldb"),
              0.0f, c, checked_int(ldc, "ldc"));
}

void qr(float* a, int64_t m64, int64_t n64, float* r) {
  const int m = checked_int(m64, "m"), n = checked_int(n64, "n");
  if (n == 0) return;
  std::vector<float> tau(static_cast<size_t>(n));
  int info = 0, lwork = -1;
  float query = 0.0f;
  sgeqrf_(&m, &n, a, &m, tau.data(), &query, &lwork, &info);
  lwork = workspace_size(query);
  std::vector<float> work(static_cast<size_t>(lwork));
  sgeqrf_(&m, &n, a, &m, tau.data(), work.data(), &lwork, &info);
  if (info != 0)
    throw Error(ErrorKind::Numeric,
                "QR factorisation failed (sgeqrf info " + std::to_string(info) + ")");
  if (r) {
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < n; ++i)
        r[size_t(j) * size_t(n) + size_t(i)] = i <= j ? a[size_t(j) * size_t(m) + size_t(i)] : 0.0f;
  }
  lwork = -1;
  sorgqr_(&m, &n, &n, a, &m, tau.data(), &query, &lwork, &info);
  lwork = workspace_size(query);
  work.resize(static_cast<size_t>(lwork));
  sorgqr_(&m, &n, &n, a, &m, tau.data(), work.data(), &lwork, &info);
  if (info != 0)
    throw Error(ErrorKind::Numeric, "forming Q failed (sorgqr info " + std::to_string(info) + ")");
}

void svd(double* a, int64_t m64, int64_t n64, double* s, double* u, double* vt) {
  const int m = checked_int(m64, "m"), n = checked_int(n64, "n");
  const int k = std::min(m, n);
  if (k == 0) return;
  const char jobz = 'S';
  std::vector<int> iwork(size_t(8) * size_t(k));
  int info = 0, lwork = -1;
  double query = 0.0;
  dgesdd_(&jobz, &m, &n, a, &m, s, u, &m, vt, &k, &query, &lwork, iwork.data(), &info, 1);
  lwork = workspace_size(query);
  std::vector<double> work(static_cast<size_t>(lwork));
  dgesdd_(&jobz, &m, &n, a, &m, s, u, &m, vt, &k, work.data(), &lwork, iwork.data(), &info, 1);
  if (info != 0)
    throw Error(ErrorKind::Numeric,
                "SVD did not converge (dgesdd info " + std::to_string(info) + ")");
}

}  // namespace deltaedit::linalg
