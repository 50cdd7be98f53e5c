#pragma once
// Small-M GEMM over pre-packed weights for batch-1 inference (M = 8…64 rows). OpenBLAS re-packs the whole
// weight matrix on every call, which at M=8 costs more than the multiply (measured: M=8, K=3072, N=768
// at ~21 GFLOP/s). Packing once at session build and streaming the panels straight from memory avoids that.
// AVX2+FMA only, chosen at run time; callers fall back to OpenBLAS elsewhere.
#include <cstdint>
#include <vector>

namespace convnext_fast {

constexpr int64_t kPanel = 16;  // output columns per packed panel (two 8-float AVX registers)

struct PackedWeight {
  int64_t n = 0, k = 0;
  std::vector<float> panels;  // [ceil(n/16)][k][16], zero-padded past n
};

// Packs an nn.Linear weight w[n, k] (row-major) into column panels.
PackedWeight pack_weight(const float* w, int64_t n, int64_t k);

bool small_gemm_supported();  // this CPU has AVX2 and FMA

// c[m, cols of panels [p0, p1)] = a[m, k] · wᵀ (ldc is c's row stride; only columns < n are written).
void small_gemm(const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1, float* c,
                int64_t ldc);

}  // namespace convnext_fast
