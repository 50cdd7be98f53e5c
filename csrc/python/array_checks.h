#pragma once
// Argument checks for the numpy-facing bindings: every failure names the argument and what was expected.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

namespace convnext_fast {

// Checks a C-contiguous float32 array of the given shape (-1 = any extent) and returns it.
// `writable` is for output buffers the kernel fills.
pybind11::array checked_array(const pybind11::handle& obj, const char* name, const std::vector<int64_t>& shape,
                              bool writable = false);

inline const float* cdata(const pybind11::array& a) { return static_cast<const float*>(a.data()); }
inline float* mdata(pybind11::array& a) { return static_cast<float*>(a.mutable_data()); }

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace convnext_fast
