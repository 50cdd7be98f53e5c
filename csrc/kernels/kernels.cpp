// Fused CPU kernels of the ConvNeXt-1D block (see kernels.h). Hot row loops come in a scalar and an AVX2+FMA
// variant chosen by the call's Isa argument (isa.h has the table), so the default build stays portable.
#include "kernels.h"

#if CNF_X86_KERNELS
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <vector>

#include "blas.h"
#include "parallel.h"

namespace convnext_fast {

namespace {
std::atomic<int> g_threads{std::max(1, default_threads())};

// Thresholds. Each was set on one host and is right for it only: the "dev host" is the 2-vCPU AMD EPYC
// (AVX2+FMA, 512 KiB L2 per core) shared with other processes, the "Intel host" a 2-vCPU AVX-512 machine.
// Re-measure with benchmarks/cpp/packed_model_bench before trusting them elsewhere.

// Below this many multiply-adds a loop runs on one thread: waking the OpenMP team costs a few µs. Dev host,
// 2026-11-24 (6bdddb8): an estimate from the team wake-up cost, not swept; linear_rows scales it by 64.
constexpr int64_t kParallelMinWork = 1 << 12;

// Row-block height for the bottleneck: the [rows, 4C] hidden block of one thread stays within ~1 MiB
// (the dev host's 512 KiB L2 plus a slice of L3), while blocks stay tall enough that each pass over the
// weights (and OpenBLAS's per-call packing of them) is amortised. Dev host, 2026-11-24 (1d91fb3, re-checked
// with the packed kernel): 1 MiB beat 512 KiB at B=256 (tiny 1.00 vs 1.02 s) and tied at B=32 once blocks
// were balanced (benchmarks/cpp/packed_model_bench). The clamp to 16…512 rows was not measured.
constexpr int64_t kHiddenBlockBytes = 1 << 20;

int64_t rows_per_block(int64_t h) {
  int64_t mb = kHiddenBlockBytes / (h * static_cast<int64_t>(sizeof(float)));
  mb = std::clamp<int64_t>(mb, 16, 512);
  return mb / 8 * 8;
}

// Per-thread scratch that survives calls, so the hot path never touches malloc.
float* scratch(int slot, size_t count) {
  thread_local std::vector<float> buffers[3];
  auto& buf = buffers[slot];
  if (buf.size() < count) buf.resize(count);
  return buf.data();
}

// Row blocks of one thread each need this many flops before a split of the weight columns across the team
// pays for its two barriers; below it the block runs on one thread. Tuned per ISA level on two hosts,
// 2026-12-02 (d7dd775). On the shared 2-core dev host a barrier can cost a scheduler time slice (ms) when
// another process holds the other core. 1 MFLOP (with the 4096 above) measured best with the AVX2 packed
// kernel on the dev host: atto B=1 min 0.57 ms against 0.65 ms at the earlier
// 4 MFLOP / 32768, and 0.58–0.60 ms with every block split (C++ harness over PackedModel, 2000 calls,
// two interleaved passes; see benchmarks/README.md). With the AVX-512 kernel (Intel host, ~1.5× the
// AVX2 kernel's flops) the break-even moves up: 4 MFLOP, which keeps atto's stages 1-2 on one thread,
// gave atto B=1 min 0.634/0.657/0.647 ms against 0.659/0.672/0.660 ms at 1 MFLOP (three interleaved
// passes of 1500 calls), and 8 MFLOP 0.75-0.77 ms. The scalar level shares the AVX2 value (not measured).
int64_t split_columns_min_flops(Isa isa) { return isa >= Isa::kAvx512 ? 4'000'000 : 1'000'000; }

// c[:, n0:n1] = a · w[n0:n1]ᵀ through the packed kernel when the weight was packed (the inference session),
// else OpenBLAS. n0 and n1 are multiples of kPanel or n1 == n (split_range rounds to 16).
void linear_cols(Isa isa, int64_t m, int64_t k, const float* a, int64_t lda, const float* w, const PackedWeight* packed,
                 int64_t n0, int64_t n1, float* c, int64_t ldc) {
  if (packed != nullptr && !packed->empty()) {
    packed_gemm(isa, a, m, lda, *packed, n0 / kPanel, (n1 + kPanel - 1) / kPanel, nullptr, c, ldc);
  } else {
    gemm_nt(m, n1 - n0, k, a, lda, w + n0 * k, k, c + n0, ldc);
  }
}

// Split [0, n) into `parts` contiguous ranges with edges rounded to multiples of 16 (SIMD/GEMM friendly).
void split_range(int64_t n, int parts, int index, int64_t* begin, int64_t* end) {
  int64_t chunk = ((n + parts - 1) / parts + 15) / 16 * 16;
  *begin = std::min(n, chunk * index);
  *end = std::min(n, *begin + chunk);
}
}  // namespace

int num_threads() { return g_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) {
#ifdef _OPENMP
  g_threads.store(std::max(1, n), std::memory_order_relaxed);
#else
  (void)n;  // without OpenMP the loops run serially whatever is asked: report what they do
#endif
}

namespace detail {

// erf by the rational minimax approximation used by Eigen/XLA (clamped to [-4, 4], where float erf is ±1);
// accuracy is a few ulps (checked against math.erf in tests). p(x²)·x / q(x²), highest power first.
constexpr float kErfP[7] = {-2.72614225801306e-10f, 2.77068142495902e-08f,  -2.10102402082508e-06f,
                            -5.69250639462346e-05f, -7.34990630326855e-04f, -2.95459980854025e-03f,
                            -1.60960333262415e-02f};
constexpr float kErfQ[5] = {-1.45660718464996e-05f, -2.13374055278905e-04f, -1.68282697438203e-03f,
                            -7.37332916720468e-03f, -1.42647390514189e-02f};
constexpr float kSqrtHalf = 0.70710678118654752f;

static inline float erf_rational(float a) {
  const float x = std::max(-4.f, std::min(4.f, a));
  const float x2 = x * x;
  float p = kErfP[0], q = kErfQ[0];
  for (int i = 1; i < 7; ++i) p = p * x2 + kErfP[i];
  for (int i = 1; i < 5; ++i) q = q * x2 + kErfQ[i];
  return p * x / q;
}

// 0.5·v·(1 + erf(v/√2)); a NaN input stays NaN through the leading factor v.
static inline float gelu_erf(float v) { return 0.5f * v * (1.f + erf_rational(v * kSqrtHalf)); }

#if CNF_X86_KERNELS
// The same GELU eight lanes at a time. Written with intrinsics because GCC turns the scalar clamp into
// branches and leaves the loops scalar (it did: the GELU pass was 22% of an atto batch-1 forward under
// perf). min/max return their second operand for a NaN lane, so a NaN is clamped to 4 and survives
// through the factor v, as in the scalar version.
CNF_TARGET_AVX2 static inline __m256 gelu_erf8(__m256 v) {
  const __m256 x = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(v, _mm256_set1_ps(kSqrtHalf)), _mm256_set1_ps(4.f)),
                                 _mm256_set1_ps(-4.f));
  const __m256 x2 = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(kErfP[0]), q = _mm256_set1_ps(kErfQ[0]);
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(kErfP[i]));
  for (int i = 1; i < 5; ++i) q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(kErfQ[i]));
  const __m256 erf = _mm256_div_ps(_mm256_mul_ps(p, x), q);
  const __m256 half_v = _mm256_mul_ps(_mm256_set1_ps(0.5f), v);
  return _mm256_fmadd_ps(half_v, erf, half_v);
}

CNF_TARGET_AVX2 static void gelu_span_avx2(const float* in, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, gelu_erf8(_mm256_loadu_ps(in + i)));
  for (; i < n; ++i) out[i] = gelu_erf(in[i]);
}

CNF_TARGET_AVX2 static void bias_gelu_span_avx2(float* h, const float* bias, int64_t n,
                                                                    float* act) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(h + i), _mm256_loadu_ps(bias + i));
    _mm256_storeu_ps(h + i, v);
    _mm256_storeu_ps(act + i, gelu_erf8(v));
  }
  for (; i < n; ++i) {
    const float v = h[i] + bias[i];
    h[i] = v;
    act[i] = gelu_erf(v);
  }
}

#endif  // CNF_X86_KERNELS

void gelu_span(Isa isa, const float* in, int64_t n, float* out) {
  (void)isa;  // one variant only in a portable build
#if CNF_X86_KERNELS
  if (isa >= Isa::kAvx2) return gelu_span_avx2(in, n, out);
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = gelu_erf(in[i]);
}

// pre = h + bias is written back to h (kept for backward when h is the caller's hidden_out), and
// act = GELU(pre). h and act may be the same buffer.
void bias_gelu_span(Isa isa, float* h, const float* bias, int64_t n, float* act) {
  (void)isa;  // one variant only in a portable build
#if CNF_X86_KERNELS
  if (isa >= Isa::kAvx2) return bias_gelu_span_avx2(h, bias, n, act);
#endif
  for (int64_t i = 0; i < n; ++i) {
    const float v = h[i] + bias[i];
    h[i] = v;
    act[i] = gelu_erf(v);
  }
}

#if CNF_X86_KERNELS
// exp(x) for x ≤ 0 (Cephes' range reduction and polynomial, ~1 ulp), for the GELU derivative's Gaussian.
CNF_TARGET_AVX2 static inline __m256 exp_nonpos8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
  const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

#endif  // CNF_X86_KERNELS

constexpr float kInvSqrt2Pi = 0.39894228040143268f;

// act = GELU(z) and dz = da · GELU'(z), GELU'(z) = Φ(z) + z·φ(z), one pass sharing the erf; dz may alias da.
static inline void gelu_backward_scalar(float z, float da, float* act, float* dz) {
  const float cdf = 0.5f * (1.f + erf_rational(z * kSqrtHalf));
  *act = z * cdf;
  *dz = da * (cdf + z * kInvSqrt2Pi * std::exp(-0.5f * z * z));
}

#if CNF_X86_KERNELS
CNF_TARGET_AVX2 static void gelu_backward_span_avx2(const float* pre, float* da_dz, int64_t n,
                                                                        float* act) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 z = _mm256_loadu_ps(pre + i);
    const __m256 x = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(z, _mm256_set1_ps(kSqrtHalf)), _mm256_set1_ps(4.f)),
                                   _mm256_set1_ps(-4.f));
    const __m256 x2 = _mm256_mul_ps(x, x);
    __m256 p = _mm256_set1_ps(kErfP[0]), q = _mm256_set1_ps(kErfQ[0]);
    for (int j = 1; j < 7; ++j) p = _mm256_fmadd_ps(p, x2, _mm256_set1_ps(kErfP[j]));
    for (int j = 1; j < 5; ++j) q = _mm256_fmadd_ps(q, x2, _mm256_set1_ps(kErfQ[j]));
    const __m256 half = _mm256_set1_ps(0.5f);
    const __m256 cdf = _mm256_fmadd_ps(half, _mm256_div_ps(_mm256_mul_ps(p, x), q), half);
    const __m256 pdf = _mm256_mul_ps(_mm256_set1_ps(kInvSqrt2Pi),
                                     exp_nonpos8(_mm256_mul_ps(_mm256_set1_ps(-0.5f), _mm256_mul_ps(z, z))));
    _mm256_storeu_ps(act + i, _mm256_mul_ps(z, cdf));
    _mm256_storeu_ps(da_dz + i, _mm256_mul_ps(_mm256_loadu_ps(da_dz + i), _mm256_fmadd_ps(z, pdf, cdf)));
  }
  for (; i < n; ++i) gelu_backward_scalar(pre[i], da_dz[i], act + i, da_dz + i);
}

#endif  // CNF_X86_KERNELS

void gelu_backward_span(Isa isa, const float* pre, float* da_dz, int64_t n, float* act) {
  (void)isa;  // one variant only in a portable build
#if CNF_X86_KERNELS
  if (isa >= Isa::kAvx2) return gelu_backward_span_avx2(pre, da_dz, n, act);
#endif
  for (int64_t i = 0; i < n; ++i) gelu_backward_scalar(pre[i], da_dz[i], act + i, da_dz + i);
}

CNF_ALWAYS_INLINE void residual_span_body(const float* x, const float* branch, const float* b2, const float* gamma,
                                          float scale, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] + scale * gamma[i] * (branch[i] + b2[i]);
}
CNF_ROW_VARIANTS(residual_span,
                 (const float* x, const float* branch, const float* b2, const float* gamma, float scale, int64_t n,
                  float* y),
                 (x, branch, b2, gamma, scale, n, y))

CNF_ALWAYS_INLINE void layernorm_span_body(const float* in, int64_t c, const float* w, const float* b, float eps,
                                           float* out) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < c; ++i) sum += in[i];
  const float mean = sum / static_cast<float>(c);
  float sq = 0.f;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < c; ++i) sq += (in[i] - mean) * (in[i] - mean);
  const float rstd = 1.f / std::sqrt(sq / static_cast<float>(c) + eps);
  for (int64_t i = 0; i < c; ++i) out[i] = (in[i] - mean) * rstd * w[i] + b[i];
}
CNF_ROW_VARIANTS(layernorm_span, (const float* in, int64_t c, const float* w, const float* b, float eps, float* out),
                 (in, c, w, b, eps, out))

// One output row of the depthwise conv (zero padding) into acc, then LayerNorm into out.
CNF_ALWAYS_INLINE void dwconv_layernorm_row_body(const float* xb, int64_t t_len, int64_t c, int64_t t,
                                                 const float* w_kc, const float* conv_bias, const float* norm_w,
                                                 const float* norm_b, float eps, float* acc, float* out) {
  for (int64_t i = 0; i < c; ++i) acc[i] = conv_bias[i];
  for (int k = 0; k < kDwKernel; ++k) {
    const int64_t src = t + k - kDwKernel / 2;
    if (src < 0 || src >= t_len) continue;
    const float* xr = xb + src * c;
    const float* wk = w_kc + k * c;
    for (int64_t i = 0; i < c; ++i) acc[i] += wk[i] * xr[i];
  }
  layernorm_span_body(acc, c, norm_w, norm_b, eps, out);
}
CNF_ROW_VARIANTS(dwconv_layernorm_row,
                 (const float* xb, int64_t t_len, int64_t c, int64_t t, const float* w_kc, const float* conv_bias,
                  const float* norm_w, const float* norm_b, float eps, float* acc, float* out),
                 (xb, t_len, c, t, w_kc, conv_bias, norm_w, norm_b, eps, acc, out))

}  // namespace detail

void gelu(Isa isa, const float* in, int64_t n, float* out) {
  [[maybe_unused]] const int nt = num_threads();  // only the pragmas read it (none without OpenMP)
#pragma omp parallel num_threads(nt) if (nt > 1 && n > kParallelMinWork)
  {
    int64_t begin, end;
    split_range(n, team_size(), thread_index(), &begin, &end);
    detail::gelu_span(isa, in + begin, end - begin, out + begin);
  }
}

void layernorm_rows(Isa isa, const float* in, int64_t rows, int64_t c, const float* w, const float* b, float eps,
                    float* out) {
  [[maybe_unused]] const int nt = num_threads();
#pragma omp parallel for num_threads(nt) if (nt > 1 && rows * c > kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) detail::layernorm_span(isa, in + r * c, c, w, b, eps, out + r * c);
}

void dwconv_layernorm(Isa isa, const float* x, int64_t batch, int64_t t, int64_t c, const float* w_kc,
                      const float* conv_bias, const float* norm_w, const float* norm_b, float eps, float* out) {
  const int64_t rows = batch * t;
  [[maybe_unused]] const int nt = num_threads();
#pragma omp parallel for num_threads(nt) if (nt > 1 && rows * c * kDwKernel > kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / t;
    float* acc = scratch(0, static_cast<size_t>(c));
    detail::dwconv_layernorm_row(isa, x + b * t * c, t, c, r % t, w_kc, conv_bias, norm_w, norm_b, eps, acc,
                                 out + r * c);
  }
}

void linear_rows(Isa isa, const float* a, int64_t rows, int64_t k, const float* w, const float* bias, int64_t n,
                 float* out, const PackedWeight* packed) {
  const int nt = num_threads();
  // Rows split when each thread gets at least 64 (dev host, 2026-11-24, 1d91fb3: not swept), else columns.
  const bool split_rows = rows >= 64 * nt;
  const bool use_packed = packed != nullptr && !packed->empty();
  // OpenBLAS path: bias first, then one GEMM accumulating onto it (beta = 1). The packed kernel starts its
  // accumulators from the bias instead.
  if (!use_packed)
    for (int64_t r = 0; r < rows; ++r) std::copy(bias, bias + n, out + r * n);
#pragma omp parallel num_threads(nt) if (nt > 1 && rows * k * n > 64 * kParallelMinWork)
  {
    const int parts = team_size(), index = thread_index();
    int64_t begin, end;
    if (split_rows) {
      split_range(rows, parts, index, &begin, &end);
      if (use_packed)
        packed_gemm(isa, a + begin * k, end - begin, k, *packed, 0, (n + kPanel - 1) / kPanel, bias, out + begin * n,
                    n);
      else
        gemm_nt(end - begin, n, k, a + begin * k, k, w, k, out + begin * n, n, 1.f);
    } else {
      split_range(n, parts, index, &begin, &end);
      if (use_packed)
        packed_gemm(isa, a, rows, k, *packed, begin / kPanel, (end + kPanel - 1) / kPanel, bias, out, n);
      else
        gemm_nt(rows, end - begin, k, a, k, w + begin * k, k, out + begin, n, 1.f);
    }
  }
}

namespace {
// One row block of the bottleneck on one thread: hidden block and branch block live in thread scratch.
void bottleneck_block(Isa isa, const float* x, const float* n, int64_t r0, int64_t m, int64_t t, int64_t c, int64_t h,
                      const float* w1, const float* b1, const float* w2, const float* b2, const float* gamma,
                      const float* sample_scale, float* y, float* hidden_out, const PackedWeight* w1_packed,
                      const PackedWeight* w2_packed) {
  float* act = scratch(1, static_cast<size_t>(m * h));
  float* pre = hidden_out != nullptr ? hidden_out + r0 * h : act;
  float* branch = scratch(2, static_cast<size_t>(m * c));
  linear_cols(isa, m, c, n + r0 * c, c, w1, w1_packed, 0, h, pre, h);
  for (int64_t i = 0; i < m; ++i) detail::bias_gelu_span(isa, pre + i * h, b1, h, act + i * h);
  linear_cols(isa, m, h, act, h, w2, w2_packed, 0, c, branch, c);
  for (int64_t i = 0; i < m; ++i) {
    const int64_t r = r0 + i;
    const float s = sample_scale != nullptr ? sample_scale[r / t] : 1.f;
    detail::residual_span(isa, x + r * c, branch + i * c, b2, gamma, s, c, y + r * c);
  }
}
}  // namespace

namespace {
// Few rows (batch 1): the team shares one row block and splits the weight columns instead, so each
// thread streams only its share of W1 and W2; the hidden block is shared through L2/L3. Called by every
// thread of an enclosing parallel region (the barriers bind to it). act_buf / branch_buf are the calling
// thread's scratch, shared by the team (a fresh std::vector per call showed up as malloc/mmap and page
// faults at batch 1).
void bottleneck_columns_team(Isa isa, const float* x, const float* n, int64_t rows, int64_t t, int64_t c, int64_t h,
                             int64_t mb, const float* w1, const float* b1, const float* w2, const float* b2,
                             const float* gamma, const float* sample_scale, float* y, float* hidden_out,
                             const PackedWeight* w1_packed, const PackedWeight* w2_packed, float* act_buf,
                             float* branch_buf) {
  const int parts = team_size(), index = thread_index();
  int64_t h0, h1, c0, c1;
  split_range(h, parts, index, &h0, &h1);
  split_range(c, parts, index, &c0, &c1);
  for (int64_t r0 = 0; r0 < rows; r0 += mb) {
    const int64_t m = std::min(mb, rows - r0);
    float* act = act_buf;
    float* pre = hidden_out != nullptr ? hidden_out + r0 * h : act;
    linear_cols(isa, m, c, n + r0 * c, c, w1, w1_packed, h0, h1, pre, h);
    for (int64_t i = 0; i < m; ++i) detail::bias_gelu_span(isa, pre + i * h + h0, b1 + h0, h1 - h0, act + i * h + h0);
#pragma omp barrier
    linear_cols(isa, m, h, act, h, w2, w2_packed, c0, c1, branch_buf, c);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t r = r0 + i;
      const float s = sample_scale != nullptr ? sample_scale[r / t] : 1.f;
      detail::residual_span(isa, x + r * c + c0, branch_buf + i * c + c0, b2 + c0, gamma + c0, s, c1 - c0,
                            y + r * c + c0);
    }
    // The next chunk overwrites act; after the last one the caller's closing barrier suffices.
    if (r0 + mb < rows) {
#pragma omp barrier
    }
  }
}

// The column split pays two barriers per row block; below this much work a single thread is faster.
bool splits_columns(Isa isa, int64_t rows, int64_t c, int64_t h, int nt) {
  const int64_t mb = rows_per_block(h), nblocks = (rows + mb - 1) / mb;
  return nt > 1 && 4 * rows * c * h >= split_columns_min_flops(isa) && nblocks < 2 * nt;
}
}  // namespace

void bottleneck(Isa isa, const float* x, const float* n, int64_t batch, int64_t t, int64_t c, int64_t h,
                const float* w1, const float* b1, const float* w2, const float* b2, const float* gamma,
                const float* sample_scale, float* y, float* hidden_out, const PackedWeight* w1_packed,
                const PackedWeight* w2_packed) {
  const int64_t rows = batch * t;
  const int64_t mb = rows_per_block(h);
  const int nt = num_threads();
  if (splits_columns(isa, rows, c, h, nt)) {
    float* act_buf = scratch(1, static_cast<size_t>(std::min(mb, rows) * h));
    float* branch_buf = scratch(2, static_cast<size_t>(std::min(mb, rows) * c));
#pragma omp parallel num_threads(nt)
    bottleneck_columns_team(isa, x, n, rows, t, c, h, mb, w1, b1, w2, b2, gamma, sample_scale, y, hidden_out, w1_packed,
                            w2_packed, act_buf, branch_buf);
    return;
  }
  // Many row blocks: each thread runs whole blocks (fc1 → GELU → fc2 → residual) in its own cache.
  // Equal blocks, as many per thread: 256 rows as 80+80+80+16 left one core idle for a quarter of
  // tiny's stage 4 at B=32 (157 ms against 138 ms balanced, C++ harness over PackedModel).
  const bool tiny = 4 * rows * c * h < split_columns_min_flops(isa);
  int64_t nblocks = (rows + mb - 1) / mb;
  if (nt > 1 && !tiny) nblocks = (nblocks + nt - 1) / nt * nt;
  const int64_t block_rows = (rows + nblocks - 1) / nblocks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && nblocks > 1 && !tiny)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t r0 = std::min(rows, blk * block_rows);
    const int64_t m = std::min(block_rows, rows - r0);
    if (m > 0)
      bottleneck_block(isa, x, n, r0, m, t, c, h, w1, b1, w2, b2, gamma, sample_scale, y, hidden_out, w1_packed,
                       w2_packed);
  }
}

void convnext_block(Isa isa, float* h, float* n, int64_t batch, int64_t t, int64_t c, const float* w_kc,
                    const float* conv_bias, const float* norm_w, const float* norm_b, float eps, const float* w1,
                    const float* b1, const float* w2, const float* b2, const float* gamma,
                    const PackedWeight* w1_packed, const PackedWeight* w2_packed) {
  const int64_t rows = batch * t, hidden = 4 * c;
  const int nt = num_threads();
  if (!splits_columns(isa, rows, c, hidden, nt)) {
    dwconv_layernorm(isa, h, batch, t, c, w_kc, conv_bias, norm_w, norm_b, eps, n);
    bottleneck(isa, h, n, batch, t, c, hidden, w1, b1, w2, b2, gamma, nullptr, h, nullptr, w1_packed, w2_packed);
    return;
  }
  // Batch 1: the conv rows and the column-split bottleneck share one parallel region, so a block wakes
  // the team once instead of twice (the for loop's closing barrier publishes n to every thread).
  const int64_t mb = rows_per_block(hidden);
  float* act_buf = scratch(1, static_cast<size_t>(std::min(mb, rows) * hidden));
  float* branch_buf = scratch(2, static_cast<size_t>(std::min(mb, rows) * c));
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      float* acc = scratch(0, static_cast<size_t>(c));
      detail::dwconv_layernorm_row(isa, h + (r / t) * t * c, t, c, r % t, w_kc, conv_bias, norm_w, norm_b, eps, acc,
                                   n + r * c);
    }
    bottleneck_columns_team(isa, h, n, rows, t, c, hidden, mb, w1, b1, w2, b2, gamma, nullptr, h, nullptr, w1_packed,
                            w2_packed, act_buf, branch_buf);
  }
}

namespace {
// Per-thread partial sums of the weight gradients, summed once at the end (a shared atomic add per row
// would serialise the threads). Zeroed here.
std::vector<float>& partials(int nt, int64_t per_thread) {
  thread_local std::vector<float> buf;
  buf.assign(static_cast<size_t>(nt * per_thread), 0.f);
  return buf;
}

// dy for one row of LayerNorm(conv): recompute conv + statistics, accumulate dnorm_w / dnorm_b / dconv_w /
// dconv_b partials (part: [dnorm_w c | dnorm_b c | dconv_b c | dconv_w 7c, tap-major]).
CNF_ALWAYS_INLINE void dwconv_layernorm_backward_row_body(const float* xb, int64_t t_len, int64_t c, int64_t t,
                                                          const float* w_kc, const float* conv_bias,
                                                          const float* norm_w, float eps, const float* g, float* y,
                                                          float* dy, float* part) {
  for (int64_t i = 0; i < c; ++i) y[i] = conv_bias[i];
  for (int k = 0; k < kDwKernel; ++k) {
    const int64_t src = t + k - kDwKernel / 2;
    if (src < 0 || src >= t_len) continue;
    const float* xr = xb + src * c;
    const float* wk = w_kc + k * c;
    for (int64_t i = 0; i < c; ++i) y[i] += wk[i] * xr[i];
  }
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = 0; i < c; ++i) sum += y[i];
  const float mean = sum / static_cast<float>(c);
  float sq = 0.f;
#pragma omp simd reduction(+ : sq)
  for (int64_t i = 0; i < c; ++i) sq += (y[i] - mean) * (y[i] - mean);
  const float rstd = 1.f / std::sqrt(sq / static_cast<float>(c) + eps);
  float s1 = 0.f, s2 = 0.f;  // Σ g·w and Σ g·w·x̂
  float* dnw = part;
  float* dnb = part + c;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t i = 0; i < c; ++i) {
    const float xhat = (y[i] - mean) * rstd;
    y[i] = xhat;
    const float gw = g[i] * norm_w[i];
    s1 += gw;
    s2 += gw * xhat;
    dnw[i] += g[i] * xhat;
    dnb[i] += g[i];
  }
  const float m1 = s1 / static_cast<float>(c), m2 = s2 / static_cast<float>(c);
  float* dcb = part + 2 * c;
  for (int64_t i = 0; i < c; ++i) {
    dy[i] = rstd * (g[i] * norm_w[i] - m1 - y[i] * m2);
    dcb[i] += dy[i];
  }
  for (int k = 0; k < kDwKernel; ++k) {
    const int64_t src = t + k - kDwKernel / 2;
    if (src < 0 || src >= t_len) continue;
    const float* xr = xb + src * c;
    float* dw = part + (3 + k) * c;
    for (int64_t i = 0; i < c; ++i) dw[i] += dy[i] * xr[i];
  }
}
CNF_ROW_VARIANTS(dwconv_layernorm_backward_row,
                 (const float* xb, int64_t t_len, int64_t c, int64_t t, const float* w_kc, const float* conv_bias,
                  const float* norm_w, float eps, const float* g, float* y, float* dy, float* part),
                 (xb, t_len, c, t, w_kc, conv_bias, norm_w, eps, g, y, dy, part))

// dx row s = Σ_k w[k] · dy[s − k + 3] (the conv's transpose).
CNF_ALWAYS_INLINE void dwconv_input_grad_row_body(const float* dyb, int64_t t_len, int64_t c, int64_t s,
                                                  const float* w_kc, float* dx) {
  for (int64_t i = 0; i < c; ++i) dx[i] = 0.f;
  for (int k = 0; k < kDwKernel; ++k) {
    const int64_t src = s - k + kDwKernel / 2;
    if (src < 0 || src >= t_len) continue;
    const float* dr = dyb + src * c;
    const float* wk = w_kc + k * c;
    for (int64_t i = 0; i < c; ++i) dx[i] += wk[i] * dr[i];
  }
}
CNF_ROW_VARIANTS(dwconv_input_grad_row,
                 (const float* dyb, int64_t t_len, int64_t c, int64_t s, const float* w_kc, float* dx),
                 (dyb, t_len, c, s, w_kc, dx))
}  // namespace

void dwconv_layernorm_backward(Isa isa, const float* x, const float* grad, int64_t batch, int64_t t, int64_t c,
                               const float* w_kc, const float* conv_bias, const float* norm_w, float eps, float* dx,
                               float* dconv_w, float* dconv_b, float* dnorm_w, float* dnorm_b) {
  const int64_t rows = batch * t, per_thread = (3 + kDwKernel) * c;
  const int threads = num_threads();
  const int nt = (threads > 1 && rows * c * kDwKernel > kParallelMinWork) ? threads : 1;
  std::vector<float>& part = partials(nt, per_thread);
  std::unique_ptr<float[]> dy(new float[static_cast<size_t>(rows * c)]);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    float* mine = part.data() + thread_index() * per_thread;
    float* y = scratch(0, static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      dwconv_layernorm_backward_row(isa, x + (r / t) * t * c, t, c, r % t, w_kc, conv_bias, norm_w, eps,
                                    grad + r * c, y, dy.get() + r * c, mine);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      dwconv_input_grad_row(isa, dy.get() + (r / t) * t * c, t, c, r % t, w_kc, dx + r * c);
  }
  for (int64_t i = 0; i < c; ++i) {
    float nw = 0.f, nb = 0.f, cb = 0.f;
    for (int th = 0; th < nt; ++th) {
      const float* p = part.data() + th * per_thread;
      nw += p[i];
      nb += p[c + i];
      cb += p[2 * c + i];
    }
    dnorm_w[i] = nw;
    dnorm_b[i] = nb;
    dconv_b[i] = cb;
    for (int k = 0; k < kDwKernel; ++k) {
      float w = 0.f;
      for (int th = 0; th < nt; ++th) w += part[th * per_thread + (3 + k) * c + i];
      dconv_w[i * kDwKernel + k] = w;
    }
  }
}

void bottleneck_backward(Isa isa, const float* grad_y, const float* n, const float* pre, int64_t batch, int64_t t,
                         int64_t c, int64_t h, const float* w1, const float* w2, const float* b2, const float* gamma,
                         const float* sample_scale, float* dn, float* dw1, float* db1, float* dw2, float* db2,
                         float* dgamma) {
  const int64_t rows = batch * t;
  const int threads = num_threads();
  const bool parallel = threads > 1 && 4 * rows * c * h > split_columns_min_flops(isa);
  const int nt = parallel ? threads : 1;
  // gs = grad_y · drop-path scale (needed whole for dW2), act = GELU(pre) and dz for the weight GEMMs.
  std::unique_ptr<float[]> gs(new float[static_cast<size_t>(rows * c)]);
  std::unique_ptr<float[]> act(new float[static_cast<size_t>(rows * h)]);
  std::unique_ptr<float[]> dz(new float[static_cast<size_t>(rows * h)]);
  std::vector<float>& part = partials(nt, 2 * c);  // per thread: dgamma's Σ W2 ⊙ (gsᵀ·act) | Σ_rows gs
  const int64_t mb = rows_per_block(h);
  int64_t nblocks = (rows + mb - 1) / mb;
  nblocks = (nblocks + nt - 1) / nt * nt;
  const int64_t block_rows = (rows + nblocks - 1) / nblocks;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    // Row blocks: the data gradients, each block's [rows, h] slices staying in this core's cache between
    // the GEMM writing da, the GELU-backward pass and the GEMM reading dz.
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t r0 = std::min(rows, blk * block_rows), m = std::min(block_rows, rows - r0);
      if (m <= 0) continue;
      float* gsg = scratch(2, static_cast<size_t>(m * c));
      for (int64_t i = 0; i < m; ++i) {
        const int64_t r = r0 + i;
        const float s = sample_scale != nullptr ? sample_scale[r / t] : 1.f;
        for (int64_t j = 0; j < c; ++j) {
          const float v = grad_y[r * c + j] * s;
          gs[r * c + j] = v;
          gsg[i * c + j] = v * gamma[j];
        }
      }
      gemm_nn(m, h, c, gsg, c, w2, h, dz.get() + r0 * h, h);
      detail::gelu_backward_span(isa, pre + r0 * h, dz.get() + r0 * h, m * h, act.get() + r0 * h);
      gemm_nn(m, c, h, dz.get() + r0 * h, h, w1, c, dn + r0 * c, c);
    }
    // Column slices of the weight gradients over all rows: dW1[h0:h1] = dzᵀ·n, (gsᵀ·act)[:, h0:h1], which
    // gives dW2 = gamma ⊙ it and dgamma's Σ_h W2 ⊙ it.
    const int parts = team_size(), index = thread_index();
    int64_t h0, h1, c0, c1;
    split_range(h, parts, index, &h0, &h1);
    split_range(c, parts, index, &c0, &c1);
    float* mine = part.data() + index * 2 * c;
    if (h1 > h0) {
      gemm_tn(h1 - h0, c, rows, dz.get() + h0, h, n, c, dw1 + h0 * c, c);
      for (int64_t j = h0; j < h1; ++j) db1[j] = 0.f;
      for (int64_t r = 0; r < rows; ++r) {
        const float* dr = dz.get() + r * h;
        for (int64_t j = h0; j < h1; ++j) db1[j] += dr[j];
      }
      gemm_tn(c, h1 - h0, rows, gs.get(), c, act.get() + h0, h, dw2 + h0, h);
      for (int64_t i = 0; i < c; ++i) {
        float acc = 0.f;
        float* row = dw2 + i * h;
        const float* wrow = w2 + i * h;
        for (int64_t j = h0; j < h1; ++j) {
          acc += wrow[j] * row[j];
          row[j] *= gamma[i];
        }
        mine[i] = acc;
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = c0; j < c1; ++j) mine[c + j] += gs[r * c + j];
  }
  for (int64_t i = 0; i < c; ++i) {
    float dg = 0.f, sum = 0.f;
    for (int th = 0; th < nt; ++th) {
      dg += part[th * 2 * c + i];
      sum += part[th * 2 * c + c + i];
    }
    dgamma[i] = dg + sum * b2[i];
    db2[i] = gamma[i] * sum;
  }
}

}  // namespace convnext_fast
