#pragma once
// ISA dispatch: the one way a kernel picks its instruction-set variant.
//
// Levels are ordered, and a CPU at one level can run every variant below it:
//   scalar       portable C++, any CPU and compiler (auto-vectorised for the build's baseline ISA)
//   avx2         x86-64 AVX2 + FMA
//   avx512       x86-64 AVX-512F
//   avx512_bf16  AVX-512F + AVX512_BF16 (vdpbf16ps)
//
// Which kernel has which variant; a call at level L runs the highest variant not above L:
//   kernel (file)                                       scalar  avx2  avx512  avx512_bf16
//   GELU, bias+GELU, GELU backward spans (kernels.cpp)     x      x
//   row loops: residual, LayerNorm, dwconv+LayerNorm,      x      x
//     its backward, dwconv input grad (kernels.cpp)
//   packed GEMM, fp32 panels (packed_gemm.cpp)             x      x      x
//   packed GEMM, bf16 panels (packed_gemm.cpp)             x      x              x
//   OpenBLAS GEMMs (blas.h: unpacked weights, backward)    OpenBLAS dispatches on its own
// The avx2 row loops are the scalar C++ compiled a second time for AVX2+FMA (CNF_ROW_VARIANTS below); the
// rest of the avx2/avx512 variants are intrinsics (the bf16 panels' avx2 variant widens them to fp32).
// The column-split threshold of the bottleneck also depends on the level (kernels.cpp,
// split_columns_min_flops).
//
// How the level is chosen:
//   1. best_isa(): the CPU's features are read once, at first use (cpuid through __builtin_cpu_supports),
//      and the highest level whose features are all present wins: a score pick as in ggml, the level being
//      the score. A CONVNEXT_FAST_PORTABLE_ONLY build, or any non-x86 target, has only scalar.
//   2. Each entry point (a Python binding, PackedModel::forward, a benchmark) reads active_isa() =
//      min(best_isa(), isa_limit()) once, at the start of the call, and passes that Isa down as an argument:
//      kernels read no global to choose their variant.
//   3. set_isa_limit() (tests and benchmarks: force a lower variant) is an atomic store. A call that is
//      already running keeps the level it read, so changing the limit while other threads run kernels is
//      safe; it applies to calls that start afterwards.
#include <string>
#include <vector>

#if defined(__x86_64__) && !defined(CONVNEXT_FAST_PORTABLE_ONLY) && (defined(__GNUC__) || defined(__clang__))
#define CNF_X86_KERNELS 1
#else
#define CNF_X86_KERNELS 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CNF_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CNF_ALWAYS_INLINE inline
#endif

#if CNF_X86_KERNELS
#define CNF_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define CNF_TARGET_AVX512 __attribute__((target("avx512f")))
#define CNF_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bf16")))
#endif

namespace convnext_fast {

enum class Isa : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2, kAvx512Bf16 = 3 };

constexpr Isa kAllIsas[] = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512, Isa::kAvx512Bf16};

// "scalar", "avx2", "avx512", "avx512_bf16".
const char* isa_name(Isa isa);
// The level named `name`; false (and *isa untouched) for any other string.
bool isa_from_name(const std::string& name, Isa* isa);

// The highest level this build has variants for and this CPU runs (detected once).
Isa best_isa();
// Every level up to best_isa(), lowest first.
std::vector<Isa> supported_isas();
// The levels this build compiled variants for, whatever the CPU (scalar only when portable).
std::vector<Isa> compiled_isas();

// The level a kernel call starting now runs at: min(best_isa(), isa_limit()).
Isa active_isa();
Isa isa_limit();
// Caps active_isa() for calls that start after it (tests, benchmarks); returns the previous cap. The
// default cap is the highest level, i.e. no cap.
Isa set_isa_limit(Isa limit);

}  // namespace convnext_fast

// Defines `static void fn(Isa isa, params...)` running `fn##_body` (an always-inline function with those
// params): compiled for AVX2+FMA and for the baseline, the AVX2 copy taken at level avx2 and above. The same
// C++ vectorised twice, as GCC's target_clones would, but chosen by the call's Isa argument.
#define CNF_WITH_ISA(...) (Isa isa, __VA_ARGS__)
#if CNF_X86_KERNELS
#define CNF_ROW_VARIANTS(fn, params, args)                \
  CNF_TARGET_AVX2 static void fn##_avx2 params {          \
    fn##_body args;                                       \
  }                                                       \
  static void fn##_scalar params { fn##_body args; }      \
  static void fn CNF_WITH_ISA params {                    \
    if (isa >= Isa::kAvx2) return fn##_avx2 args;         \
    fn##_scalar args;                                     \
  }
#else
#define CNF_ROW_VARIANTS(fn, params, args)                \
  static void fn##_scalar params { fn##_body args; }      \
  static void fn CNF_WITH_ISA params {                    \
    (void)isa;                                            \
    fn##_scalar args;                                     \
  }
#endif
