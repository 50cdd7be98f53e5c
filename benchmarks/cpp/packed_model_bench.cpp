// A whole PackedModel forward (what InferenceSession runs) with no Python in the loop:
//   packed_model_bench {atto|tiny} [calls=200] [batch=1] [avx2]   (C_in=20, T=256, OMP_NUM_THREADS threads)
// "avx2" forces the packed GEMM's AVX2 kernel on a CPU that has AVX-512.
// Weights are random normal (std 0.05), the input random normal (std 1).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "packed_model.h"

extern "C" void scipy_openblas_set_num_threads(int);

int main(int argc, char** argv) {
  scipy_openblas_set_num_threads(1);
  const std::string variant = argc > 1 ? argv[1] : "atto";
  const int calls = argc > 2 ? std::atoi(argv[2]) : 200;
  const int64_t batch = argc > 3 ? std::atoll(argv[3]) : 1;
  if (argc > 4 && std::string(argv[4]) == "avx2") convnext_fast::set_isa_limit(convnext_fast::Isa::kAvx2);
  const convnext_fast::Isa isa = convnext_fast::active_isa();
  if (variant != "atto" && variant != "tiny") {
    std::fprintf(stderr, "variant must be atto or tiny\n");
    return 2;
  }
  const bool tiny = variant == "tiny";
  const std::vector<int64_t> dims = tiny ? std::vector<int64_t>{96, 192, 384, 768} : std::vector<int64_t>{40, 80, 160, 320};
  const std::vector<int64_t> depths = tiny ? std::vector<int64_t>{3, 3, 9, 3} : std::vector<int64_t>{2, 2, 6, 2};
  std::mt19937 gen(0);
  std::normal_distribution<float> normal(0.f, 1.f);
  convnext_fast::WeightLookup random_weights = [&](const std::string&, const std::vector<int64_t>& shape) {
    size_t count = 1;
    for (int64_t d : shape) count *= size_t(d);
    std::vector<float> v(count);
    for (float& x : v) x = 0.05f * normal(gen);
    return v;
  };
  const int64_t c_in = 20, t = 256;
  convnext_fast::PackedModel model(c_in, dims, depths, 3, 1e-6f, random_weights);
  std::vector<float> x(size_t(batch * c_in * t)), out(size_t(batch * 3));
  for (float& v : x) v = normal(gen);
  double best = 1e30, total = 0;
  for (int i = 0; i < calls; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    model.forward(isa, x.data(), batch, t, out.data());
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, ms);
    total += ms;
  }
  std::printf("%s B=%lld %s: min %.3f ms, mean %.3f ms over %d calls\n", variant.c_str(), (long long)batch,
              convnext_fast::isa_name(isa), best,
              total / calls, calls);
}
