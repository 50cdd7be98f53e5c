#include "array_checks.h"

#include <sstream>

namespace py = pybind11;

namespace convnext_fast {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
  s << "]";
  return s.str();
}

py::array checked_array(const py::handle& obj, const char* name, const std::vector<int64_t>& shape, bool writable) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + " must be a numpy float32 array, got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(name) + " must be float32, got " + std::string(py::str(a.dtype())));
  std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
  bool ok = got.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == got[i];
  if (!ok)
    throw py::value_error(std::string(name) + " must have shape " + shape_string(shape) + ", got " + shape_string(got));
  if (!(a.flags() & py::array::c_style)) throw py::value_error(std::string(name) + " must be C-contiguous");
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writable (it is an output)");
  return a;
}

}  // namespace convnext_fast
