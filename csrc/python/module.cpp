// pybind11 entry point of convnext_fast._C. Kernels register themselves from their own files through
// the register_* functions declared in bindings.h; this file only wires them together.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings.h"
#include "isa.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "convnext_fast CPU kernels (raw float32 buffers, channels-last [B, T, C]; no libtorch)";
  m.def("build_info", []() {
    py::dict info;
#ifdef CONVNEXT_FAST_NATIVE
    info["native"] = true;
#else
    info["native"] = false;
#endif
#ifdef CONVNEXT_FAST_PORTABLE_ONLY
    info["portable_only"] = true;
#else
    info["portable_only"] = false;
#endif
#ifdef _OPENMP
    info["openmp"] = _OPENMP;
#else
    info["openmp"] = false;
#endif
    std::vector<std::string> compiled;
    for (convnext_fast::Isa isa : convnext_fast::compiled_isas()) compiled.emplace_back(convnext_fast::isa_name(isa));
    info["compiled_isas"] = compiled;
    info["best_isa"] = convnext_fast::isa_name(convnext_fast::best_isa());
    info["compiler"] = __VERSION__;
    return info;
  });
  convnext_fast::register_all(m);
}
