#include "bindings.h"

#include <cblas.h>

namespace convnext_fast {
void register_all(pybind11::module_& m) {
  // OpenBLAS runs single-threaded inside our OpenMP loops (see blas.h); its own pool would oversubscribe.
  scipy_openblas_set_num_threads(1);
  m.def("blas_config", []() { return std::string(scipy_openblas_get_config()); });
  register_isa(m);
  register_kernels(m);
  register_model(m);
}
}  // namespace convnext_fast
