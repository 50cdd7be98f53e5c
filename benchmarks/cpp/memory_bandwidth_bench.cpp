// Read bandwidth with 1 and 2 threads over a buffer of [MiB] (default 256, beyond the L3 of the AMD host):
// the floor for a batch-1 forward, which streams every weight once (atto: 15 MB, tiny: 105 MB of float32).
//   memory_bandwidth_bench [MiB]
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? size_t(std::max(1, std::atoi(argv[1]))) : 256;
  const size_t n = (mib << 20) / sizeof(float);
  float* a = static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)));
  for (size_t i = 0; i < n; ++i) a[i] = 1.f;
  for (int threads = 1; threads <= 2; ++threads) {
    double best = 1e30;
    float sink = 0;
    for (int rep = 0; rep < 8; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
      {
        const size_t parts = size_t(omp_get_num_threads()), id = size_t(omp_get_thread_num());
        const size_t begin = n / parts * id, end = n / parts * (id + 1);
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (size_t i = begin; i < end; i += 32) {
          s0 = _mm256_add_ps(s0, _mm256_load_ps(a + i));
          s1 = _mm256_add_ps(s1, _mm256_load_ps(a + i + 8));
          s2 = _mm256_add_ps(s2, _mm256_load_ps(a + i + 16));
          s3 = _mm256_add_ps(s3, _mm256_load_ps(a + i + 24));
        }
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (float v : lanes) total += v;
      }
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      sink += total;
    }
    std::printf("%d thread(s): %.1f GB/s read (best of 8 passes over %zu MiB; checksum %.0f)\n", threads,
                n * sizeof(float) / best / 1e9, mib, double(sink));
  }
  std::free(a);
}
