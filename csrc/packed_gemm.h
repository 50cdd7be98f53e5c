#pragma once
// GEMM over weights packed once into 16-column panels, for the inference session's linear layers at every
// batch size. OpenBLAS re-packs the whole weight matrix on every call, which at batch 1 (M = 8…64 rows)
// costs as much as the multiply; with the panels packed ahead of time the kernel streams the weights
// straight from memory. Single-threaded one-core figures against OpenBLAS are in benchmarks/README.md
// ("packed GEMM"): faster at every shape the models use except N = 40 (atto's fc2, 17% padding).
// AVX-512F or AVX2+FMA, chosen at run time; callers fall back to OpenBLAS on older CPUs.
#include <cstdint>
#include <vector>

namespace convnext_fast {

constexpr int64_t kPanel = 16;  // output columns per packed panel (two 8-float AVX registers)

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
// activations to bf16 too and accumulates in fp32: with vdpbf16ps where the CPU has AVX512_BF16, else a
// portable loop over the same bf16 products (exact in fp32), so both give the same values up to the
// summation order. Runs on any x86-64.
PackedWeight pack_weight_bf16(const float* w, int64_t n, int64_t k);

// float → bf16, round to nearest even (NaN stays NaN).
uint16_t to_bf16(float v);

bool bf16_dot_supported();       // this CPU has AVX512_BF16 (and AVX-512F)
bool set_use_bf16_dot(bool on);  // force the portable bf16 loop (false) for tests; returns the previous choice
bool uses_bf16_dot();

bool packed_gemm_supported();  // this CPU has AVX2 and FMA

// Where the CPU has AVX-512F the packed GEMM uses 16-float registers (two panels per step); elsewhere
// AVX2. set_use_avx512(false) forces the AVX2 kernel (tests cover both, benchmarks compare them) and
// returns the previous choice; asking for AVX-512 on a CPU without it keeps AVX2. Not for use while
// kernels are running.
bool avx512_supported();
bool set_use_avx512(bool on);
bool uses_avx512();

// c[m, cols of panels [p0, p1)] = a[m, k] · wᵀ (bf16 weights: see pack_weight_bf16) (+ bias[col] when bias is not null). ldc is c's row
// stride; only columns < n are written, so c may be exactly n wide.
void packed_gemm(const float* a, int64_t m, int64_t lda, const PackedWeight& w, int64_t p0, int64_t p1,
                 const float* bias, float* c, int64_t ldc);

}  // namespace convnext_fast
