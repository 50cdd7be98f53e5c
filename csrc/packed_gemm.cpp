#include "packed_gemm.h"

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

bool packed_gemm_supported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

namespace {
// The first row tile of each panel is the one that pulls the panel from L3/DRAM (the others find it in
// L1/L2); it prefetches 16 k-steps (16 cache lines, 1 KiB) ahead, which crosses into the next panel near
// the end. Measured with the C++ harness over PackedModel, four interleaved runs: tiny B=1 min 6.9–7.7 ms
// against 8.6–10.0 ms without, atto B=1 0.63 against 0.78 ms; distance 32 was no better, 8 worse.
constexpr int64_t kPrefetchSteps = 16;
// MR rows × 16 columns: 2·MR accumulators + 2 weight registers + 1 broadcast fit the 16 ymm registers
// for MR ≤ 6. Every loop over MR must be fully unrolled: GCC otherwise keeps the accumulator arrays in
// memory and stores all 12 of them on every k step, which capped the first version of this kernel at
// about a third of the FMA peak (33 vs 97 GFLOP/s on one core, benchmarks/README.md).
template <int MR, bool kPrefetch>
__attribute__((target("avx2,fma"))) void tile(const float* a, int64_t lda, const float* panel, int64_t k,
                                              const float* bias, float* c, int64_t ldc, int64_t cols) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask_lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols)), lane);
  const __m256i mask_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols) - 8), lane);
  __m256 init_lo = _mm256_setzero_ps(), init_hi = _mm256_setzero_ps();
  if (bias != nullptr) {
    // Masked loads: a partial last panel must not read past the end of the bias vector.
    init_lo = _mm256_maskload_ps(bias, mask_lo);
    init_hi = _mm256_maskload_ps(bias + 8, mask_hi);
  }
  __m256 lo[MR], hi[MR];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    lo[r] = init_lo;
    hi[r] = init_hi;
  }
  for (int64_t p = 0; p < k; ++p) {
    if (kPrefetch) _mm_prefetch(reinterpret_cast<const char*>(panel + (p + kPrefetchSteps) * kPanel), _MM_HINT_T0);
    const __m256 w0 = _mm256_loadu_ps(panel + p * kPanel);
    const __m256 w1 = _mm256_loadu_ps(panel + p * kPanel + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + p);
      lo[r] = _mm256_fmadd_ps(av, w0, lo[r]);
      hi[r] = _mm256_fmadd_ps(av, w1, hi[r]);
    }
  }
  if (cols == kPanel) {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(c + r * ldc, lo[r]);
      _mm256_storeu_ps(c + r * ldc + 8, hi[r]);
    }
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm256_maskstore_ps(c + r * ldc, mask_lo, lo[r]);
      _mm256_maskstore_ps(c + r * ldc + 8, mask_hi, hi[r]);
    }
  }
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t);
constexpr TileFn kTiles[7] = {nullptr, tile<1, false>, tile<2, false>, tile<3, false>,
                              tile<4, false>, tile<5, false>, tile<6, false>};
constexpr TileFn kPrefetchTiles[7] = {nullptr, tile<1, true>, tile<2, true>, tile<3, true>,
                                      tile<4, true>, tile<5, true>, tile<6, true>};
constexpr int64_t kMaxRows = 6;
}  // namespace

void packed_gemm(const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1,
                 const float* bias, float* c, int64_t ldc) {
  // Rows are cut into tiles of nearly equal height (8 rows → 4 + 4, not 6 + 2): a 2-row tile does
  // 4 FMAs per 4 loads and would run at half speed.
  const int64_t tiles = (m + kMaxRows - 1) / kMaxRows;
  // Panels outermost: one panel (k·16 floats) is read from memory once and reused from L1/L2 by every
  // row tile, so the weights stream through exactly once per call.
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = w.panels.data() + p * w.k * kPanel;
    const int64_t col0 = p * kPanel, cols = std::min(kPanel, w.n - col0);
    const float* panel_bias = bias != nullptr ? bias + col0 : nullptr;
    int64_t r = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t left = m - r, rows = (left + (tiles - t) - 1) / (tiles - t);
      (t == 0 ? kPrefetchTiles : kTiles)[rows](a + r * lda, lda, panel, w.k, panel_bias, c + r * ldc + col0, ldc, cols);
      r += rows;
    }
  }
}

}  // namespace convnext_fast
