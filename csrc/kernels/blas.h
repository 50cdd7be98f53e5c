#pragma once
// The GEMMs go to OpenBLAS (the scipy-openblas32 wheel, symbols prefixed `scipy_`). OpenBLAS dispatches to
// the CPU's best kernels at run time, which keeps this build portable. It is pinned to one thread at module
// load (see bindings.cpp): all parallelism comes from our own OpenMP loops, so OpenBLAS, OpenMP and torch
// never stack thread pools on top of each other.
#include <cblas.h>

namespace convnext_fast {

// C[M,N] = A[M,K] · W[N,K]ᵀ + beta·C  (W laid out like nn.Linear.weight).
inline void gemm_nt(int m, int n, int k, const float* a, int lda, const float* w, int ldw, float* c, int ldc,
                    float beta = 0.f) {
  if (m <= 0 || n <= 0) return;
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.f, a, lda, w, ldw, beta, c, ldc);
}

// C[M,N] = A[M,K] · B[K,N] + beta·C  (the backward's data gradients: dA = dC · W).
inline void gemm_nn(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc,
                    float beta = 0.f) {
  if (m <= 0 || n <= 0) return;
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
}

// C[M,N] = A[K,M]ᵀ · B[K,N] + beta·C  (the backward's weight gradients: dW = dCᵀ · X over K rows).
inline void gemm_tn(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float* c, int ldc,
                    float beta = 0.f) {
  if (m <= 0 || n <= 0) return;
  scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace convnext_fast
