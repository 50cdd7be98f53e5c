#include "isa.h"

#include <algorithm>
#include <atomic>
#include <iterator>

namespace convnext_fast {

namespace {
Isa detect() {
#if CNF_X86_KERNELS
  __builtin_cpu_init();
  // Each level needs every feature of the levels below it: an AVX-512 CPU without FMA (none ship) would
  // stop at scalar rather than run an FMA-less AVX2 variant.
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::kScalar;
  if (!__builtin_cpu_supports("avx512f")) return Isa::kAvx2;
  if (!__builtin_cpu_supports("avx512bf16")) return Isa::kAvx512;
  return Isa::kAvx512Bf16;
#else
  return Isa::kScalar;
#endif
}

std::atomic<int> g_limit{static_cast<int>(Isa::kAvx512Bf16)};
}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Bf16:
      return "avx512_bf16";
  }
  return "unknown";
}

bool isa_from_name(const std::string& name, Isa* isa) {
  for (Isa candidate : kAllIsas) {
    if (name == isa_name(candidate)) {
      *isa = candidate;
      return true;
    }
  }
  return false;
}

Isa best_isa() {
  static const Isa best = detect();  // thread-safe one-time initialisation
  return best;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (isa <= best_isa()) out.push_back(isa);
  return out;
}

std::vector<Isa> compiled_isas() {
#if CNF_X86_KERNELS
  return {std::begin(kAllIsas), std::end(kAllIsas)};
#else
  return {Isa::kScalar};
#endif
}

Isa isa_limit() { return static_cast<Isa>(g_limit.load(std::memory_order_relaxed)); }

Isa set_isa_limit(Isa limit) {
  return static_cast<Isa>(g_limit.exchange(static_cast<int>(limit), std::memory_order_relaxed));
}

Isa active_isa() { return std::min(best_isa(), isa_limit()); }

}  // namespace convnext_fast
