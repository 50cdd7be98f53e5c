#include "packed_gemm.h"

#if CNF_X86_KERNELS
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

namespace convnext_fast {

uint16_t to_bf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

PackedWeight pack_weight_bf16(const float* w, int64_t n, int64_t k) {
  PackedWeight p;
  p.n = n;
  p.k = k;
  const int64_t panels = (n + kPanel - 1) / kPanel, k2 = (k + 1) / 2;
  p.panels_bf16.assign(static_cast<size_t>(panels * k2 * kPanel * 2), 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < k; ++i)
      p.panels_bf16[(((j / kPanel) * k2 + i / 2) * kPanel + j % kPanel) * 2 + i % 2] = to_bf16(w[j * k + i]);
  return p;
}

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

namespace {
// Prefetching. The first row tile of a panel would pull the whole panel from L3/DRAM while the later tiles
// find it in L1/L2, so memory traffic would come in bursts a third to a half of the time (tiny's stage 3
// ran at 12 GB/s while the machine streams ~21). Instead every tile of panel p prefetches an equal share
// of panel p+1, evenly spaced over its k steps, which keeps a steady stream of requests in flight for the
// whole panel. Measured on the 2-vCPU AVX2 AMD EPYC dev host, 2026-11-24 (2105fb8), with
// benchmarks/cpp/packed_model_bench, two interleaved runs: tiny B=1 min
// 5.31–5.35 ms against 6.15–6.17 ms with a fixed 16-step look-ahead in the first tile only (which itself
// beat no software prefetch, 6.9–7.7 against 8.6–10.0 ms in an earlier, busier run); combining both was no
// better (5.41–5.45 ms), nor was the L2 hint (5.45–5.53 ms).
constexpr int64_t kCacheLine = 64;

// `lines` lines from `next` on, one every k / lines of the tile's k steps (several per step when a tile
// prefetches more lines than it has steps, as the AVX-512 kernel's two-panel strips can).
struct SpreadPrefetch {
  const char* next;
  int64_t lines, k, due = 0;
  void step() {
    due += lines;
    while (due >= k) {
      due -= k;
#if defined(__GNUC__) || defined(__clang__)
      __builtin_prefetch(next, 0, 3);  // prefetcht0 on x86
#endif
      next += kCacheLine;
    }
  }
};

// ---- fp32 panels, portable: the scalar level ----
// MR rows × one panel with the accumulators in a plain array; compilers keep it in vector registers where
// the target has them (SSE on baseline x86-64, NEON on aarch64).
constexpr int64_t kMaxRowsScalar = 4;

template <int MR>
void tile_scalar(const float* a, int64_t lda, const float* panel, int64_t k, const float* bias, float* c, int64_t ldc,
                 int64_t cols) {
  float acc[MR][kPanel];
  for (int r = 0; r < MR; ++r)
    for (int64_t j = 0; j < kPanel; ++j) acc[r][j] = bias != nullptr && j < cols ? bias[j] : 0.f;
  for (int64_t p = 0; p < k; ++p) {
    const float* wp = panel + p * kPanel;
    for (int r = 0; r < MR; ++r) {
      const float av = a[r * lda + p];
      for (int64_t j = 0; j < kPanel; ++j) acc[r][j] += av * wp[j];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = acc[r][j];
}

using TileScalarFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t);
constexpr TileScalarFn kTilesScalar[kMaxRowsScalar + 1] = {nullptr, tile_scalar<1>, tile_scalar<2>, tile_scalar<3>,
                                                           tile_scalar<4>};

void packed_gemm_scalar(const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1,
                        const float* bias, float* c, int64_t ldc) {
  for (int64_t p = p0; p < p1; ++p) {
    const float* panel = w.panels.data() + p * w.k * kPanel;
    const int64_t col0 = p * kPanel, cols = std::min(kPanel, w.n - col0);
    const float* panel_bias = bias != nullptr ? bias + col0 : nullptr;
    for (int64_t r = 0; r < m; r += kMaxRowsScalar) {
      const int64_t rows = std::min(kMaxRowsScalar, m - r);
      kTilesScalar[rows](a + r * lda, lda, panel, w.k, panel_bias, c + r * ldc + col0, ldc, cols);
    }
  }
}

#if CNF_X86_KERNELS
// The MR × 16 accumulators of an AVX2 tile with what sits at the panel's edge: lane masks for a partial last
// panel (cols < 16, where neither the bias load nor the store may touch columns ≥ n), the start value (the
// bias, or zero) and the store. Shared by the fp32 and bf16 tiles; always inlined, so with the MR loops
// unrolled the arrays stay in registers.
template <int MR>
struct Avx2TileRows {
  __m256i mask_lo, mask_hi;
  __m256 lo[MR], hi[MR];

  CNF_ALWAYS_INLINE CNF_TARGET_AVX2 Avx2TileRows(const float* bias, int64_t cols) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    mask_lo = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols)), lane);
    mask_hi = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols) - 8), lane);
    __m256 init_lo = _mm256_setzero_ps(), init_hi = _mm256_setzero_ps();
    if (bias != nullptr) {
      init_lo = _mm256_maskload_ps(bias, mask_lo);
      init_hi = _mm256_maskload_ps(bias + 8, mask_hi);
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      lo[r] = init_lo;
      hi[r] = init_hi;
    }
  }

  CNF_ALWAYS_INLINE CNF_TARGET_AVX2 void store(float* c, int64_t ldc, int64_t cols) const {
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
};

// ---- fp32 panels, AVX2+FMA ----
// MR rows × 16 columns: 2·MR accumulators + 2 weight registers + 1 broadcast fit the 16 ymm registers
// for MR ≤ 6. Every loop over MR must be fully unrolled: GCC otherwise keeps the accumulator arrays in
// memory and stores all 12 of them on every k step, which capped the first version of this kernel at
// about a third of the FMA peak (33 vs 97 GFLOP/s on one core, benchmarks/README.md).
// pf / pf_lines: this tile's share of the next panel, prefetched one line every k / pf_lines steps.
template <int MR>
CNF_TARGET_AVX2 void tile(const float* a, int64_t lda, const float* panel, int64_t k,
                                              const float* bias, float* c, int64_t ldc, int64_t cols,
                                              const char* pf, int64_t pf_lines) {
  Avx2TileRows<MR> acc(bias, cols);
  SpreadPrefetch prefetch{pf, pf_lines, k};
  for (int64_t p = 0; p < k; ++p) {
    prefetch.step();
    const __m256 w0 = _mm256_loadu_ps(panel + p * kPanel);
    const __m256 w1 = _mm256_loadu_ps(panel + p * kPanel + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + p);
      acc.lo[r] = _mm256_fmadd_ps(av, w0, acc.lo[r]);
      acc.hi[r] = _mm256_fmadd_ps(av, w1, acc.hi[r]);
    }
  }
  acc.store(c, ldc, cols);
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t,
                       const char*, int64_t);
constexpr TileFn kTiles[7] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};
constexpr int64_t kMaxRows = 6;

// The AVX-512 kernel: MR rows × NP panels (16·NP columns), one 16-float register per row and panel.
// Two panels per step (2·MR accumulators + 2 weight registers + 1 broadcast fit the 32 zmm registers for
// MR ≤ 12) keep the broadcasts at one per two FMAs; with one panel a step would issue a load per FMA.
// Same prefetch scheme as above. Written out beside tile<> rather than templated over the vector width:
// GCC will not inline AVX-512 intrinsics into a function whose target lacks AVX-512, and a template's
// target attribute is the same for every instantiation.
constexpr int64_t kMaxRows512 = 12;

__mmask16 lane_mask(int64_t cols) {
  return cols >= 16 ? static_cast<__mmask16>(0xFFFF)
                    : static_cast<__mmask16>((1u << static_cast<unsigned>(std::max<int64_t>(cols, 0))) - 1u);
}

template <int MR, int NP>
CNF_TARGET_AVX512 void tile512(const float* a, int64_t lda, const float* panel, int64_t k,
                                                const float* bias, float* c, int64_t ldc, int64_t cols,
                                                const char* pf, int64_t pf_lines) {
  const __mmask16 m0 = lane_mask(cols), m1 = NP == 2 ? lane_mask(cols - kPanel) : 0;
  // Masked loads fault only on enabled lanes: a partial last panel never reads past the bias vector.
  const __m512 init0 = bias != nullptr ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 init1 = NP == 2 && bias != nullptr ? _mm512_maskz_loadu_ps(m1, bias + kPanel) : _mm512_setzero_ps();
  const float* panel1 = panel + k * kPanel;
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    acc0[r] = init0;
    acc1[r] = init1;
  }
  SpreadPrefetch prefetch{pf, pf_lines, k};
  for (int64_t p = 0; p < k; ++p) {
    prefetch.step();
    const __m512 w0 = _mm512_loadu_ps(panel + p * kPanel);
    const __m512 w1 = NP == 2 ? _mm512_loadu_ps(panel1 + p * kPanel) : w0;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + p]);
      acc0[r] = _mm512_fmadd_ps(av, w0, acc0[r]);
      if (NP == 2) acc1[r] = _mm512_fmadd_ps(av, w1, acc1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, acc0[r]);
    if (NP == 2) _mm512_mask_storeu_ps(c + r * ldc + kPanel, m1, acc1[r]);
  }
}

template <int NP, size_t... R>
constexpr std::array<TileFn, sizeof...(R) + 1> tiles512(std::index_sequence<R...>) {
  return {nullptr, tile512<static_cast<int>(R) + 1, NP>...};
}
constexpr auto kTiles512One = tiles512<1>(std::make_index_sequence<kMaxRows512>());
constexpr auto kTiles512Two = tiles512<2>(std::make_index_sequence<kMaxRows512>());

void packed_gemm_avx512(const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1,
                        const float* bias, float* c, int64_t ldc) {
  const int64_t tiles = (m + kMaxRows512 - 1) / kMaxRows512;
  for (int64_t p = p0; p < p1; p += 2) {
    const int64_t np = std::min<int64_t>(2, p1 - p);
    const float* panel = w.panels.data() + p * w.k * kPanel;
    const int64_t col0 = p * kPanel, cols = std::min(np * kPanel, w.n - col0);
    const float* strip_bias = bias != nullptr ? bias + col0 : nullptr;
    const char* next = reinterpret_cast<const char*>(panel + np * w.k * kPanel);
    const int64_t next_lines = p + np >= p1 ? 0 : std::min<int64_t>(2, p1 - p - np) * w.k;
    const auto& table = np == 2 ? kTiles512Two : kTiles512One;
    int64_t r = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t left = m - r, rows = (left + (tiles - t) - 1) / (tiles - t);
      const int64_t line0 = t * next_lines / tiles, line1 = (t + 1) * next_lines / tiles;
      table[rows](a + r * lda, lda, panel, w.k, strip_bias, c + r * ldc + col0, ldc, cols,
                  next + line0 * kCacheLine, line1 - line0);
      r += rows;
    }
  }
}

// The driver of the one-panel AVX2 tiles (fp32, and bf16 widened): panels [p0, p1) of `panels`, each
// `steps` k steps of one 64-byte line (16 floats, or 16 bf16 pairs), run by table[rows] per row tile.
// Panels outermost: one panel is read from memory once and reused from L1/L2 by every row tile, so the
// weights stream through exactly once per call. Rows are cut into tiles of nearly equal height (8 rows →
// 4 + 4, not 6 + 2): a 2-row tile does 4 FMAs per 4 loads and would run at half speed.
template <typename Elem, typename TileTable>
void run_avx2_panels(const TileTable& table, int64_t max_rows, const float* a, int64_t m, int64_t lda,
                     const Elem* panels, int64_t steps, int64_t n, int64_t p0, int64_t p1, const float* bias,
                     float* c, int64_t ldc) {
  constexpr int64_t kPanelElems = kCacheLine / sizeof(Elem);  // one k step of a panel
  const int64_t tiles = (m + max_rows - 1) / max_rows;
  for (int64_t p = p0; p < p1; ++p) {
    const Elem* panel = panels + p * steps * kPanelElems;
    const int64_t col0 = p * kPanel, cols = std::min(kPanel, n - col0);
    const float* panel_bias = bias != nullptr ? bias + col0 : nullptr;
    // The next panel starts where this one ends: `steps` lines of 64 bytes.
    const char* next = reinterpret_cast<const char*>(panel + steps * kPanelElems);
    const bool last = p + 1 == p1;
    int64_t r = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t left = m - r, rows = (left + (tiles - t) - 1) / (tiles - t);
      const int64_t line0 = t * steps / tiles, line1 = (t + 1) * steps / tiles;
      table[rows](a + r * lda, lda, panel, steps, panel_bias, c + r * ldc + col0, ldc, cols, next + line0 * kCacheLine,
                  last ? 0 : line1 - line0);
      r += rows;
    }
  }
}

void packed_gemm_avx2(const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1,
                      const float* bias, float* c, int64_t ldc) {
  run_avx2_panels(kTiles, kMaxRows, a, m, lda, w.panels.data(), w.k, w.n, p0, p1, bias, c, ldc);
}
#endif  // CNF_X86_KERNELS

// ---- bf16 weights ----
// The activations, rounded to bf16 and paired along k as 32-bit words (the broadcast operand of vdpbf16ps):
// row r's pair i is (a[r, 2i], a[r, 2i+1]), a zero past an odd k. Per-thread scratch reused across calls.
const uint32_t* bf16_pairs(const float* a, int64_t m, int64_t lda, int64_t k) {
  thread_local std::vector<uint32_t> buf;
  const int64_t k2 = (k + 1) / 2;
  if (buf.size() < static_cast<size_t>(m * k2)) buf.resize(static_cast<size_t>(m * k2));
  for (int64_t r = 0; r < m; ++r) {
    const float* row = a + r * lda;
    uint32_t* out = buf.data() + r * k2;
    for (int64_t i = 0; i < k / 2; ++i)
      out[i] = static_cast<uint32_t>(to_bf16(row[2 * i])) | (static_cast<uint32_t>(to_bf16(row[2 * i + 1])) << 16);
    if (k % 2) out[k2 - 1] = to_bf16(row[k - 1]);
  }
  return buf.data();
}

#if CNF_X86_KERNELS
// MR rows × NP panels with vdpbf16ps: each step multiplies one k pair of 16·NP columns, two multiply-adds
// per lane, into fp32 accumulators. Same register plan, tiling and spread prefetch as tile512.
template <int MR, int NP>
CNF_TARGET_AVX512_BF16 void tile_bf16(const uint32_t* a, int64_t lda, const uint16_t* panel,
                                                             int64_t k2, const float* bias, float* c, int64_t ldc,
                                                             int64_t cols, const char* pf, int64_t pf_lines) {
  const __mmask16 m0 = lane_mask(cols), m1 = NP == 2 ? lane_mask(cols - kPanel) : 0;
  const __m512 init0 = bias != nullptr ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
  const __m512 init1 = NP == 2 && bias != nullptr ? _mm512_maskz_loadu_ps(m1, bias + kPanel) : _mm512_setzero_ps();
  const uint16_t* panel1 = panel + k2 * kPanel * 2;
  __m512 acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    acc0[r] = init0;
    acc1[r] = init1;
  }
  SpreadPrefetch prefetch{pf, pf_lines, k2};
  for (int64_t p = 0; p < k2; ++p) {
    prefetch.step();
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + p * kPanel * 2);
    const __m512bh w1 = NP == 2 ? (__m512bh)_mm512_loadu_si512(panel1 + p * kPanel * 2) : w0;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
      acc0[r] = _mm512_dpbf16_ps(acc0[r], av, w0);
      if (NP == 2) acc1[r] = _mm512_dpbf16_ps(acc1[r], av, w1);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(c + r * ldc, m0, acc0[r]);
    if (NP == 2) _mm512_mask_storeu_ps(c + r * ldc + kPanel, m1, acc1[r]);
  }
}

using TileBf16Fn = void (*)(const uint32_t*, int64_t, const uint16_t*, int64_t, const float*, float*, int64_t,
                            int64_t, const char*, int64_t);
template <int NP, size_t... R>
constexpr std::array<TileBf16Fn, sizeof...(R) + 1> tiles_bf16(std::index_sequence<R...>) {
  return {nullptr, tile_bf16<static_cast<int>(R) + 1, NP>...};
}
constexpr auto kTilesBf16One = tiles_bf16<1>(std::make_index_sequence<kMaxRows512>());
constexpr auto kTilesBf16Two = tiles_bf16<2>(std::make_index_sequence<kMaxRows512>());

void packed_gemm_bf16_dot(const uint32_t* a, int64_t m, const PackedWeight& w, int64_t p0, int64_t p1,
                          const float* bias, float* c, int64_t ldc) {
  const int64_t k2 = (w.k + 1) / 2, panel_size = k2 * kPanel * 2;
  const int64_t tiles = (m + kMaxRows512 - 1) / kMaxRows512;
  for (int64_t p = p0; p < p1; p += 2) {
    const int64_t np = std::min<int64_t>(2, p1 - p);
    const uint16_t* panel = w.panels_bf16.data() + p * panel_size;
    const int64_t col0 = p * kPanel, cols = std::min(np * kPanel, w.n - col0);
    const float* strip_bias = bias != nullptr ? bias + col0 : nullptr;
    // a panel is k2 cache lines (16 columns × 2 bf16 = 64 bytes per k pair)
    const char* next = reinterpret_cast<const char*>(panel + np * panel_size);
    const int64_t next_lines = p + np >= p1 ? 0 : std::min<int64_t>(2, p1 - p - np) * k2;
    const auto& table = np == 2 ? kTilesBf16Two : kTilesBf16One;
    int64_t r = 0;
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t left = m - r, rows = (left + (tiles - t) - 1) / (tiles - t);
      const int64_t line0 = t * next_lines / tiles, line1 = (t + 1) * next_lines / tiles;
      table[rows](a + r * k2, k2, panel, k2, strip_bias, c + r * ldc + col0, ldc, cols, next + line0 * kCacheLine,
                  line1 - line0);
      r += rows;
    }
  }
}
#endif  // CNF_X86_KERNELS

#if CNF_X86_KERNELS
// The activations rounded to bf16 but kept as floats, k padded to 2·k2 with a zero: the broadcast operand of
// the AVX2 kernel below, which widens the bf16 weights instead of the activations. Per-thread scratch.
// Vectorised: one scalar to_bf16 per element cost atto B=1 about a third of its bf16 time (0.91 against
// 0.59 ms fp32, ad-hoc timer on the AVX2 dev host).
CNF_TARGET_AVX2 const float* bf16_rounded(const float* a, int64_t m, int64_t lda, int64_t k) {
  thread_local std::vector<float> buf;
  const int64_t k2 = (k + 1) / 2;
  if (buf.size() < static_cast<size_t>(m * 2 * k2)) buf.resize(static_cast<size_t>(m * 2 * k2));
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
  const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff);
  const __m256i quiet = _mm256_set1_epi32(0x00400000), high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (int64_t r = 0; r < m; ++r) {
    const float* row = a + r * lda;
    float* out = buf.data() + r * 2 * k2;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
      const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
      // round to nearest even: u + 0x7fff + (bit 16 of u), then keep the high half (as to_bf16 does)
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
      const __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(half, lsb));
      const __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
      const __m256i nan = _mm256_or_si256(u, quiet);
      const __m256i bits = _mm256_and_si256(_mm256_blendv_epi8(rounded, nan, is_nan), high);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), bits);
    }
    for (; i < k; ++i) {
      const uint32_t bits = static_cast<uint32_t>(to_bf16(row[i])) << 16;
      std::memcpy(out + i, &bits, sizeof bits);
    }
    if (k % 2) out[k] = 0.f;
  }
  return buf.data();
}

// bf16 panels on AVX2+FMA (no bf16 dot instruction): each k pair's 64 bytes are widened to fp32 in
// registers, the even k of every column by a 16-bit shift, the odd k by masking the low half, and multiplied
// with FMAs, so the weights still stream at half the bytes of fp32. The products are the same exact bf16
// products as vdpbf16ps and the portable loop. 2·MR accumulators + 4 widened weights + 2 broadcasts fit
// the 16 ymm registers for MR ≤ 5.
template <int MR>
CNF_TARGET_AVX2 void tile_bf16_avx2(const float* a, int64_t lda, const uint16_t* panel, int64_t k2,
                                    const float* bias, float* c, int64_t ldc, int64_t cols, const char* pf,
                                    int64_t pf_lines) {
  const __m256i odd_half = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  Avx2TileRows<MR> acc(bias, cols);
  SpreadPrefetch prefetch{pf, pf_lines, k2};
  for (int64_t p = 0; p < k2; ++p) {
    prefetch.step();
    const __m256i v_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + p * kPanel * 2));
    const __m256i v_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + p * kPanel * 2 + kPanel));
    const __m256 even_lo = _mm256_castsi256_ps(_mm256_slli_epi32(v_lo, 16));
    const __m256 odd_lo = _mm256_castsi256_ps(_mm256_and_si256(v_lo, odd_half));
    const __m256 even_hi = _mm256_castsi256_ps(_mm256_slli_epi32(v_hi, 16));
    const __m256 odd_hi = _mm256_castsi256_ps(_mm256_and_si256(v_hi, odd_half));
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 a0 = _mm256_broadcast_ss(a + r * lda + 2 * p);
      const __m256 a1 = _mm256_broadcast_ss(a + r * lda + 2 * p + 1);
      acc.lo[r] = _mm256_fmadd_ps(a0, even_lo, acc.lo[r]);
      acc.hi[r] = _mm256_fmadd_ps(a0, even_hi, acc.hi[r]);
      acc.lo[r] = _mm256_fmadd_ps(a1, odd_lo, acc.lo[r]);
      acc.hi[r] = _mm256_fmadd_ps(a1, odd_hi, acc.hi[r]);
    }
  }
  acc.store(c, ldc, cols);
}

using TileBf16Avx2Fn = void (*)(const float*, int64_t, const uint16_t*, int64_t, const float*, float*, int64_t,
                                int64_t, const char*, int64_t);
constexpr int64_t kMaxRowsBf16Avx2 = 5;
constexpr TileBf16Avx2Fn kTilesBf16Avx2[kMaxRowsBf16Avx2 + 1] = {
    nullptr, tile_bf16_avx2<1>, tile_bf16_avx2<2>, tile_bf16_avx2<3>, tile_bf16_avx2<4>, tile_bf16_avx2<5>};

// `a` holds the bf16-rounded activations with rows 2·k2 long (bf16_rounded); a panel step is one k pair.
void packed_gemm_bf16_avx2(const float* a, int64_t m, const PackedWeight& w, int64_t p0, int64_t p1,
                           const float* bias, float* c, int64_t ldc) {
  const int64_t k2 = (w.k + 1) / 2;
  run_avx2_panels(kTilesBf16Avx2, kMaxRowsBf16Avx2, a, m, 2 * k2, w.panels_bf16.data(), k2, w.n, p0, p1, bias, c,
                  ldc);
}
#endif  // CNF_X86_KERNELS

inline float bf16_to_float(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// The portable path (scalar level, and CPUs other than x86-64): the same bf16 products, one panel and one
// row at a time, auto-vectorised over the 16 columns for the build's baseline.
void panel_bf16_loop(const uint32_t* a, int64_t lda, int64_t m, const uint16_t* panel, int64_t k2, const float* bias,
                     float* c, int64_t ldc, int64_t cols) {
  for (int64_t r = 0; r < m; ++r) {
    float acc[kPanel];
    for (int64_t j = 0; j < kPanel; ++j) acc[j] = bias != nullptr && j < cols ? bias[j] : 0.f;
    const uint32_t* ar = a + r * lda;
    for (int64_t p = 0; p < k2; ++p) {
      const float a0 = bf16_to_float(ar[p] & 0xffffu), a1 = bf16_to_float(ar[p] >> 16);
      const uint16_t* wp = panel + p * kPanel * 2;
      for (int64_t j = 0; j < kPanel; ++j) acc[j] += a0 * bf16_to_float(wp[2 * j]) + a1 * bf16_to_float(wp[2 * j + 1]);
    }
    for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = acc[j];
  }
}

void packed_gemm_bf16(Isa isa, const float* a_f32, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0,
                      int64_t p1, const float* bias, float* c, int64_t ldc) {
#if CNF_X86_KERNELS
  if (isa >= Isa::kAvx512Bf16) return packed_gemm_bf16_dot(bf16_pairs(a_f32, m, lda, w.k), m, w, p0, p1, bias, c, ldc);
  // AVX-512F without BF16 runs the AVX2 kernel too (no AVX-512 widening variant is written).
  if (isa >= Isa::kAvx2) return packed_gemm_bf16_avx2(bf16_rounded(a_f32, m, lda, w.k), m, w, p0, p1, bias, c, ldc);
#endif
  const uint32_t* a = bf16_pairs(a_f32, m, lda, w.k);
  const int64_t k2 = (w.k + 1) / 2, panel_size = k2 * kPanel * 2;
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t col0 = p * kPanel;
    panel_bf16_loop(a, k2, m, w.panels_bf16.data() + p * panel_size, k2, bias != nullptr ? bias + col0 : nullptr,
                    c + col0, ldc, std::min(kPanel, w.n - col0));
  }
}
}  // namespace

void packed_gemm(Isa isa, const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1,
                 const float* bias, float* c, int64_t ldc) {
  if (w.is_bf16()) return packed_gemm_bf16(isa, a, m, lda, w, p0, p1, bias, c, ldc);
#if CNF_X86_KERNELS
  if (isa >= Isa::kAvx512) return packed_gemm_avx512(a, m, lda, w, p0, p1, bias, c, ldc);
  if (isa >= Isa::kAvx2) return packed_gemm_avx2(a, m, lda, w, p0, p1, bias, c, ldc);
#endif
  packed_gemm_scalar(a, m, lda, w, p0, p1, bias, c, ldc);
}

}  // namespace convnext_fast
