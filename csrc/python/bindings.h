#pragma once
#include <pybind11/pybind11.h>

namespace convnext_fast {
// Adds every kernel binding to the module. Each binding file owns its own register_* function;
// register_all (bindings.cpp) calls them in order.
void register_all(pybind11::module_& m);
void register_kernels(pybind11::module_& m);  // py_kernels.cpp
void register_model(pybind11::module_& m);    // py_model.cpp
void register_isa(pybind11::module_& m);      // py_isa.cpp
}  // namespace convnext_fast
