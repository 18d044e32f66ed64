// The few dense kernels the low-rank op needs, from the system's optimized BLAS/LAPACK
// (OpenBLAS on Debian: run-time CPU dispatch, AVX2/AVX-512 where present).
//
// Matrices are column-major unless a name says otherwise. OpenBLAS's results depend on how many
// threads it splits a call over, so every call runs inside a SerialBlas scope: one BLAS thread,
// and the same bytes whatever the number of edit workers (which give the parallelism). The
// kernels are chosen per CPU model, so another CPU may differ in the last bits.
#pragma once
#include <cstdint>
#include <span>

namespace deltaedit::linalg {

// While any SerialBlas is alive, the BLAS library runs single-threaded; the setting it had is
// restored when the last one ends (a process-wide count under a lock, so concurrent edit workers
// never see it switch back mid-computation).
class SerialBlas {
 public:
  SerialBlas();
  ~SerialBlas();
  SerialBlas(const SerialBlas&) = delete;
  SerialBlas& operator=(const SerialBlas&) = delete;
};

// OpenBLAS (the pthreads build) starts its worker threads when the library loads, and each one
// busy-waits with sched_yield for about 2^28 cycles (~0.1 s) before it sleeps. A command that
// never calls BLAS (edit, apply, merge of pointwise methods) would pay that on a second core for
// nothing, so main() ends the idle workers at once: OpenBLAS restarts them on its next threaded
// call (the same path it takes after a fork). Returns false (and does nothing) with a BLAS that
// lacks the entry point.
bool park_blas_threads();

// C (m×n) = op(A) · op(B), op(X) = X or Xᵀ (trans_*), ld* the leading dimensions, f32.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float* c, int64_t ldc);

// Householder QR of the m×n (m ≥ n) column-major matrix `a`: overwrites `a` with Q (m×n,
// orthonormal columns) and, when r is not null, writes R (n×n upper triangular, column-major).
void qr(float* a, int64_t m, int64_t n, float* r = nullptr);

// Thin SVD in f64 (LAPACK divide and conquer, dgesdd) of the m×n column-major matrix `a`, which
// is destroyed: a = U·diag(s)·Vᵀ with k = min(m, n), s descending (k), u m×k and vt k×n, both
// column-major.
void svd(double* a, int64_t m, int64_t n, double* s, double* u, double* vt);

}  // namespace deltaedit::linalg
