#pragma once
// Raw-buffer CPU kernels of the ConvNeXt-1D, all float32 and channels-last [B, T, C] unless stated.
// No libtorch: the Python side hands in contiguous buffers (numpy arrays or tensor storage).
// Every kernel takes the ISA level to run at as its first argument (isa.h: the caller reads active_isa()
// once per call), so nothing a kernel does depends on a global that another thread may change.
#include <cstdint>

#include "isa.h"
#include "packed_gemm.h"

namespace convnext_fast {

constexpr int kDwKernel = 7;  // depthwise kernel size of every block ("same" padding 3)

// Threads our OpenMP loops use (default: omp_get_max_threads() at load; always 1 in a build without
// OpenMP). Read once at the start of each kernel call, so a change applies to calls that start after it.
int num_threads();
void set_num_threads(int n);

// out[b,t,:] = LayerNorm(dwconv7(x)[b,t,:]). w_kc is the conv weight transposed to [7, C] so the
// inner loop runs along contiguous channels. out must not alias x.
void dwconv_layernorm(Isa isa, const float* x, int64_t batch, int64_t t, int64_t c, const float* w_kc,
                      const float* conv_bias, const float* norm_w, const float* norm_b, float eps, float* out);

// LayerNorm of `rows` rows of length c; out may alias in.
void layernorm_rows(Isa isa, const float* in, int64_t rows, int64_t c, const float* w, const float* b, float eps,
                    float* out);

// y = x + scale[b] · gamma ⊙ (GELU(n·W1ᵀ + b1)·W2ᵀ + b2) over rows = batch·t, hidden width h.
// sample_scale ([batch] or null) is drop path. hidden_out ([rows, h] or null) receives the pre-GELU
// activation for a backward pass. y may alias x (each row only reads its own residual).
// w1_packed / w2_packed (optional, from pack_weight): when given, the GEMMs run on them and w1 / w2 are
// not read (may be null).
void bottleneck(Isa isa, const float* x, const float* n, int64_t batch, int64_t t, int64_t c, int64_t h,
                const float* w1, const float* b1, const float* w2, const float* b2, const float* gamma,
                const float* sample_scale, float* y, float* hidden_out, const PackedWeight* w1_packed = nullptr,
                const PackedWeight* w2_packed = nullptr);

// One whole block in place: h ← h + gamma ⊙ (GELU(LayerNorm(dwconv7(h))·W1ᵀ + b1)·W2ᵀ + b2), hidden
// width 4c, n: scratch [batch·t, c]. The same arithmetic as dwconv_layernorm then bottleneck.
void convnext_block(Isa isa, float* h, float* n, int64_t batch, int64_t t, int64_t c, const float* w_kc,
                    const float* conv_bias, const float* norm_w, const float* norm_b, float eps, const float* w1,
                    const float* b1, const float* w2, const float* b2, const float* gamma,
                    const PackedWeight* w1_packed, const PackedWeight* w2_packed);

// out[rows, n] = a[rows, k] · wᵀ + bias, rows split over threads. With `packed` (from pack_weight) the
// packed kernel runs and w is not read.
void linear_rows(Isa isa, const float* a, int64_t rows, int64_t k, const float* w, const float* bias, int64_t n,
                 float* out, const PackedWeight* packed = nullptr);

// Backward of dwconv_layernorm for a gradient `grad` of its output. The conv row and its LayerNorm statistics
// are recomputed row by row (7 multiply-adds and two reductions per element, cheaper than writing and
// re-reading a saved [B, T, C] conv output). Writes dx [batch, t, c], dconv_w [c, 7] (the nn.Conv1d layout
// [c, 1, 7]), dconv_b, dnorm_w, dnorm_b [c]. dx must not alias x or grad.
void dwconv_layernorm_backward(Isa isa, const float* x, const float* grad, int64_t batch, int64_t t, int64_t c,
                               const float* w_kc, const float* conv_bias, const float* norm_w, float eps, float* dx,
                               float* dconv_w, float* dconv_b, float* dnorm_w, float* dnorm_b);

// Backward of bottleneck for a gradient grad_y of y (the residual's gradient is grad_y itself, not written
// here). pre: the forward's saved pre-GELU activation [batch·t, h]. Writes dn [batch·t, c], dw1 [h, c],
// db1 [h], dw2 [c, h], db2 [c], dgamma [c]. The four GEMMs run on OpenBLAS (the weights change every step,
// so packing them would not pay).
void bottleneck_backward(Isa isa, const float* grad_y, const float* n, const float* pre, int64_t batch, int64_t t,
                         int64_t c, int64_t h, const float* w1, const float* w2, const float* b2, const float* gamma,
                         const float* sample_scale, float* dn, float* dw1, float* db1, float* dw2, float* db2,
                         float* dgamma);

// Exact-erf GELU applied to n values (a vectorisable rational erf, max error a few float ulps).
void gelu(Isa isa, const float* in, int64_t n, float* out);

}  // namespace convnext_fast
