#include "small_gemm.h"

#include <immintrin.h>

#include <algorithm>

namespace convnext_fast {

PackedWeight pack_weight(const float* w, int64_t n, int64_t k) {
  PackedWeight p;
  p.n = n;
  p.k = k;
  const int64_t panels = (n + kPanel - 1) / kPanel;
  p.panels.assign(static_cast<size_t>(panels * k * kPanel), 0.f);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i) p.panels[((j / kPanel) * k + i) * kPanel + j % kPanel] = w[j * k + i];
  return p;
}

bool small_gemm_supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

namespace {
// MR rows × 16 columns: 2·MR accumulators + 2 weight registers + 1 broadcast fit the 16 ymm registers
// for MR ≤ 6.
template <int MR>
__attribute__((target("avx2,fma"))) void tile(const float* a, int64_t lda, const float* panel, int64_t k, float* c,
                                              int64_t ldc, int64_t cols) {
  __m256 lo[MR], hi[MR];
  for (int r = 0; r < MR; ++r) lo[r] = hi[r] = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; ++p) {
    const __m256 w0 = _mm256_loadu_ps(panel + p * kPanel);
    const __m256 w1 = _mm256_loadu_ps(panel + p * kPanel + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + p);
      lo[r] = _mm256_fmadd_ps(av, w0, lo[r]);
      hi[r] = _mm256_fmadd_ps(av, w1, hi[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    if (cols == kPanel) {
      _mm256_storeu_ps(c + r * ldc, lo[r]);
      _mm256_storeu_ps(c + r * ldc + 8, hi[r]);
    } else {
      alignas(32) float tmp[kPanel];
      _mm256_store_ps(tmp, lo[r]);
      _mm256_store_ps(tmp + 8, hi[r]);
      std::copy(tmp, tmp + cols, c + r * ldc);
    }
  }
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t);
constexpr TileFn kTiles[7] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};
constexpr int64_t kMaxRows = 6;
}  // namespace

void small_gemm(const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1, float* c,
                int64_t ldc) {
  // Panels outermost: one panel (k·16 floats) is read from memory once and reused from L1/L2 by every
  // row tile, so the weights stream through exactly once per call.
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = w.panels.data() + p * w.k * kPanel;
    const int64_t col0 = p * kPanel, cols = std::min(kPanel, w.n - col0);
    for (int64_t r = 0; r < m; r += kMaxRows) {
      const int64_t rows = std::min(kMaxRows, m - r);
      kTiles[rows](a + r * lda, lda, panel, w.k, c + r * ldc + col0, ldc, cols);
    }
  }
}

}  // namespace convnext_fast
