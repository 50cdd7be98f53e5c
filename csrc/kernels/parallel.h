#pragma once
// Threads of the kernels' parallel loops: OpenMP when the build has it (CONVNEXT_FAST_OPENMP=ON and a
// compiler with OpenMP), otherwise one thread. Without OpenMP the `#pragma omp parallel/for/barrier` lines
// compile to nothing (with -fopenmp-simd the `omp simd` ones still vectorise), so every loop runs its
// team-of-one case, the same code a 1-thread OpenMP build runs.
#ifdef _OPENMP
#include <omp.h>
#endif

namespace convnext_fast {

inline int thread_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// Threads the kernels use by default: OpenMP's (OMP_NUM_THREADS or the cores), 1 without OpenMP.
inline int default_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace convnext_fast
