// Bindings of the ISA dispatch (isa.h): which levels this build and CPU run, which one a call runs now, and
// the test/benchmark limit that forces a lower one.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings.h"
#include "isa.h"

namespace py = pybind11;

namespace convnext_fast {

namespace {
std::vector<std::string> names(const std::vector<Isa>& levels) {
  std::vector<std::string> out;
  for (Isa isa : levels) out.emplace_back(isa_name(isa));
  return out;
}

Isa parse(const std::string& name) {
  Isa isa;
  if (isa_from_name(name, &isa)) return isa;
  std::string valid;
  for (Isa level : kAllIsas) valid += std::string(valid.empty() ? "" : ", ") + "'" + isa_name(level) + "'";
  throw py::value_error("unknown ISA level '" + name + "'; expected one of " + valid);
}
}  // namespace

void register_isa(py::module_& m) {
  m.def(
      "isa", []() { return std::string(isa_name(active_isa())); },
      "The ISA level a kernel call starting now runs at: the best this CPU and build support, capped by "
      "set_isa_limit ('scalar', 'avx2', 'avx512' or 'avx512_bf16').");
  m.def(
      "best_isa", []() { return std::string(isa_name(best_isa())); },
      "The highest ISA level this build has kernels for and this CPU runs (detected once).");
  m.def(
      "supported_isas", []() { return names(supported_isas()); },
      "Every ISA level this CPU and build can run, lowest first ('scalar' always).");
  m.def(
      "isa_limit", []() { return std::string(isa_name(isa_limit())); }, "The cap set by set_isa_limit.");
  m.def(
      "set_isa_limit", [](const std::string& name) { return std::string(isa_name(set_isa_limit(parse(name)))); },
      py::arg("level"),
      "Caps the ISA level of kernel calls that start after this one (tests and benchmarks force a lower "
      "variant this way; 'avx512_bf16' lifts the cap). Returns the previous cap. Thread-safe: a call already "
      "running keeps the level it started with.");
  m.def(
      "compiled_isas", []() { return names(compiled_isas()); },
      "The ISA levels this build has kernels for, whatever the CPU ('scalar' only in a portable build).");
}

}  // namespace convnext_fast
