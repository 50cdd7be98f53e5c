// One-core GEMM timings at the models' shapes: the packed kernel (AVX2, and AVX-512 where the CPU has it)
// against OpenBLAS (which re-packs the weight on every call). "hot" repeats one weight (cache-resident);
// "L3" cycles through copies of it that together fill ~24 MiB, so the kernel streams the weight from the
// last-level cache.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "packed_gemm.h"

using convnext_fast::PackedWeight;

extern "C" void scipy_openblas_set_num_threads(int);

template <class F>
double min_us(F&& f, int reps) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

int main() {
  scipy_openblas_set_num_threads(1);
  struct Shape {
    int m, k, n;
  };
  // Batch 1 of tiny and atto (rows = T of each stage), then the row blocks of larger batches.
  const Shape shapes[] = {{64, 96, 384},   {64, 384, 96},   {32, 192, 768},  {32, 768, 192},  {16, 384, 1536},
                          {16, 1536, 384}, {8, 768, 3072},  {8, 3072, 768},  {64, 40, 160},   {64, 160, 40},
                          {32, 80, 320},   {32, 320, 80},   {16, 160, 640},  {16, 640, 160},  {8, 320, 1280},
                          {8, 1280, 320},  {80, 768, 3072}, {80, 3072, 768}, {168, 384, 1536}, {512, 96, 384}};
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> uni(-0.5f, 0.5f);
  const bool avx512 = convnext_fast::best_isa() >= convnext_fast::Isa::kAvx512;
  std::printf("%-22s %18s %18s %18s", "shape", "openblas", "avx2 hot", "avx2 L3");
  if (avx512) std::printf(" %18s %18s", "avx512 hot", "avx512 L3");
  std::printf(" %9s\n", "max err");
  for (const Shape& s : shapes) {
    std::vector<float> a(size_t(s.m) * s.k), w(size_t(s.n) * s.k), c_ref(size_t(s.m) * s.n), c(size_t(s.m) * s.n);
    for (float& v : a) v = uni(gen);
    for (float& v : w) v = uni(gen);
    const size_t bytes = w.size() * sizeof(float);
    const int copies = int(std::max<size_t>(1, (size_t(24) << 20) / bytes));
    std::vector<PackedWeight> packed;
    for (int i = 0; i < copies; ++i) packed.push_back(convnext_fast::pack_weight(w.data(), s.n, s.k));
    const int64_t panels = (s.n + convnext_fast::kPanel - 1) / convnext_fast::kPanel;
    const int reps = 50;
    const double t_blas = min_us(
        [&] {
          scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s.m, s.n, s.k, 1.f, a.data(), s.k, w.data(),
                            s.k, 0.f, c_ref.data(), s.n);
        },
        reps);
    const double gf = 2.0 * s.m * s.k * s.n / 1e3;
    char name[64];
    std::snprintf(name, sizeof name, "M=%d K=%d N=%d", s.m, s.k, s.n);
    std::printf("%-22s %8.1f us %5.1f GF", name, t_blas, gf / t_blas);
    double err = 0;
    for (int use_avx512 = 0; use_avx512 <= int(avx512); ++use_avx512) {
      const auto isa = use_avx512 != 0 ? convnext_fast::Isa::kAvx512 : convnext_fast::Isa::kAvx2;
      const double t_hot = min_us(
          [&] { convnext_fast::packed_gemm(isa, a.data(), s.m, s.k, packed[0], 0, panels, nullptr, c.data(), s.n); },
          reps);
      int next = 0;
      const double t_l3 = min_us(
          [&] {
            convnext_fast::packed_gemm(isa, a.data(), s.m, s.k, packed[next], 0, panels, nullptr, c.data(), s.n);
            next = (next + 1) % copies;
          },
          reps * 2);
      for (size_t i = 0; i < c.size(); ++i) err = std::max(err, double(std::fabs(c[i] - c_ref[i])));
      std::printf(" %8.1f us %5.1f GF %8.1f us %5.1f GF", t_hot, gf / t_hot, t_l3, gf / t_l3);
    }
    std::printf(" %9.1e\n", err);
  }
}
