#pragma once
#include <pybind11/pybind11.h>

namespace convnext_fast {
// Adds every kernel binding to the module. Each kernel file owns its own register_* function;
// register_all (bindings.cpp) calls them in order.
void register_all(pybind11::module_& m);
}  // namespace convnext_fast
