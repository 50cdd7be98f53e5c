#pragma once
// GEMM over weights packed once into 16-column panels, for the inference session's linear layers at every
// batch size. OpenBLAS re-packs the whole weight matrix on every call, which at batch 1 (M = 8…64 rows)
// costs as much as the multiply; with the panels packed ahead of time the kernel streams the weights
// straight from memory. Single-threaded one-core figures against OpenBLAS are in benchmarks/README.md
// ("packed GEMM"): faster at every shape the models use except N = 40 (atto's fc2, 17% padding).
// Variants (isa.h): AVX-512F, AVX2+FMA and a portable scalar kernel for fp32 panels; vdpbf16ps, AVX2+FMA
// (weights widened to fp32 in registers) and a portable loop for bf16 panels. Any level runs any packed weight, so weights are packed whatever the CPU.
#include <cstdint>
#include <vector>

#include "isa.h"

namespace convnext_fast {

constexpr int64_t kPanel = 16;  // output columns per packed panel (two 8-float AVX registers, one AVX-512)

struct PackedWeight {
  int64_t n = 0, k = 0;
  std::vector<float> panels;  // [ceil(n/16)][k][16], zero-padded past n
  // bf16 weights instead (pack_weight_bf16): [ceil(n/16)][ceil(k/2)][16][2], each column's consecutive k
  // pair adjacent, the operand layout of AVX512_BF16's vdpbf16ps; zero-padded past n and k.
  std::vector<uint16_t> panels_bf16;
  bool empty() const { return panels.empty() && panels_bf16.empty(); }
  bool is_bf16() const { return !panels_bf16.empty(); }
};

// Packs an nn.Linear weight w[n, k] (row-major) into column panels.
PackedWeight pack_weight(const float* w, int64_t n, int64_t k);

// The same in bf16 (round to nearest even): half the bytes to stream. packed_gemm then rounds the
// activations to bf16 too and accumulates in fp32: with vdpbf16ps at level avx512_bf16, else FMAs (avx2) or
// a portable loop over the same bf16 products (exact in fp32), so all give the same values up to the
// summation order.
PackedWeight pack_weight_bf16(const float* w, int64_t n, int64_t k);

// float → bf16, round to nearest even (NaN stays NaN).
uint16_t to_bf16(float v);

// c[m, cols of panels [p0, p1)] = a[m, k] · wᵀ (bf16 weights: see pack_weight_bf16) (+ bias[col] when bias
// is not null), with the variant for `isa` (fp32 panels: avx512, avx2 or scalar; bf16 panels: avx512_bf16,
// avx2 or the loop). ldc is c's row stride; only columns < n are written, so c may be exactly n wide.
void packed_gemm(Isa isa, const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1,
                 const float* bias, float* c, int64_t ldc);

}  // namespace convnext_fast
