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
// Prefetching. The first row tile of a panel would pull the whole panel from L3/DRAM while the later tiles
// find it in L1/L2, so memory traffic would come in bursts a third to a half of the time (tiny's stage 3
// ran at 12 GB/s while the machine streams ~21). Instead every tile of panel p prefetches an equal share
// of panel p+1, evenly spaced over its k steps, which keeps a steady stream of requests in flight for the
// whole panel. Measured with benchmarks/cpp/packed_model_bench, two interleaved runs: tiny B=1 min
// 5.31–5.35 ms against 6.15–6.17 ms with a fixed 16-step look-ahead in the first tile only (which itself
// beat no software prefetch, 6.9–7.7 against 8.6–10.0 ms in an earlier, busier run); combining both was no
// better (5.41–5.45 ms), nor was the L2 hint (5.45–5.53 ms).
constexpr int64_t kCacheLine = 64;

// MR rows × 16 columns: 2·MR accumulators + 2 weight registers + 1 broadcast fit the 16 ymm registers
// for MR ≤ 6. Every loop over MR must be fully unrolled: GCC otherwise keeps the accumulator arrays in
// memory and stores all 12 of them on every k step, which capped the first version of this kernel at
// about a third of the FMA peak (33 vs 97 GFLOP/s on one core, benchmarks/README.md).
// pf / pf_lines: this tile's share of the next panel, prefetched one line every k / pf_lines steps.
template <int MR>
__attribute__((target("avx2,fma"))) void tile(const float* a, int64_t lda, const float* panel, int64_t k,
                                              const float* bias, float* c, int64_t ldc, int64_t cols,
                                              const char* pf, int64_t pf_lines) {
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
  int64_t due = 0;
  for (int64_t p = 0; p < k; ++p) {
    due += pf_lines;
    if (due >= k) {
      due -= k;
      _mm_prefetch(pf, _MM_HINT_T0);
      pf += kCacheLine;
    }
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

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t,
                       const char*, int64_t);
constexpr TileFn kTiles[7] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};
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
    // The next panel starts where this one ends: k lines of 64 bytes (16 floats per k step).
    const char* next = reinterpret_cast<const char*>(panel + w.k * kPanel);
    const bool last = p + 1 == p1;
    int64_t r = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t left = m - r, rows = (left + (tiles - t) - 1) / (tiles - t);
      const int64_t line0 = t * w.k / tiles, line1 = (t + 1) * w.k / tiles;
      kTiles[rows](a + r * lda, lda, panel, w.k, panel_bias, c + r * ldc + col0, ldc, cols, next + line0 * kCacheLine,
                   last ? 0 : line1 - line0);
      r += rows;
    }
  }
}

}  // namespace convnext_fast
