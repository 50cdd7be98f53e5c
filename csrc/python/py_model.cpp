// Binding of PackedModel: built from a {state_dict key: float32 numpy array} dict, run with one call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>

#include "array_checks.h"
#include "bindings.h"
#include "packed_model.h"

namespace py = pybind11;

namespace convnext_fast {

namespace {
// {name: float32 array} → the lookup the packed classes read their weights through.
WeightLookup dict_lookup(const py::dict& weights) {
  return [&weights](const std::string& name, const std::vector<int64_t>& shape) {
    if (!weights.contains(name)) throw py::key_error("weights is missing '" + name + "'");
    auto a = checked_array(weights[py::str(name)], ("weights['" + name + "']").c_str(), shape);
    return std::vector<float>(cdata(a), cdata(a) + a.size());
  };
}
}  // namespace

void register_model(py::module_& m) {
  py::class_<PackedModel>(m, "PackedModel",
                          "A ConvNeXt-1D with weights copied into C++ once; forward runs in a single call.")
      .def(py::init([](int64_t in_chans, std::vector<int64_t> dims, std::vector<int64_t> depths, int64_t num_outputs,
                       float eps, const py::dict& weights, bool bf16) {
             return new PackedModel(in_chans, std::move(dims), std::move(depths), num_outputs, eps,
                                    dict_lookup(weights), bf16);
           }),
           py::arg("in_chans"), py::arg("dims"), py::arg("depths"), py::arg("num_outputs"), py::arg("eps"),
           py::arg("weights"), py::arg("bf16") = false,
           "bf16: the blocks' and downsamples' linear layers keep bf16 weights (fp32 accumulation; the stem, "
           "norms and head stay fp32).")
      .def(
          "forward",
          [](const PackedModel& self, const py::handle& x_, const py::handle& out_) {
            auto x = checked_array(x_, "x", {-1, self.in_chans(), -1});
            const int64_t batch = x.shape(0), t = x.shape(2);
            if (batch < 1) throw py::value_error("x has batch size 0");
            if (t < PackedModel::kTotalStride)
              throw py::value_error("x has T=" + std::to_string(t) + " time steps; the model needs at least 32");
            auto out = checked_array(out_, "out", {batch, self.num_outputs()}, true);
            const Isa isa = active_isa();
            py::gil_scoped_release release;
            self.forward(isa, cdata(x), batch, t, mdata(out));
          },
          py::arg("x"), py::arg("out"), "x: [B, in_chans, T] float32 → out: [B, num_outputs].")
      .def(
          "try_forward",
          // The session's fast path, with no Python in between: every Python-level step after a forward
          // runs on a cache the weights have just swept (see convnext_fast.inference).
          [](const PackedModel& self, const py::handle& x_) -> py::object {
            if (!py::isinstance<py::array>(x_)) return py::none();
            auto x = py::reinterpret_borrow<py::array>(x_);
            if (!x.dtype().is(py::dtype::of<float>()) || x.ndim() != 3 || !(x.flags() & py::array::c_style))
              return py::none();
            const int64_t batch = x.shape(0), t = x.shape(2);
            if (batch < 1 || x.shape(1) != self.in_chans() || t < PackedModel::kTotalStride) return py::none();
            py::array_t<float> out({batch, self.num_outputs()});
            float* dst = out.mutable_data();
            const Isa isa = active_isa();
            {
              py::gil_scoped_release release;
              self.forward(isa, cdata(x), batch, t, dst);
            }
            return std::move(out);
          },
          py::arg("x"),
          "x: a C-contiguous float32 [B >= 1, in_chans, T >= 32] array → a new [B, num_outputs] array; any "
          "other x → None (nothing computed), for the caller to convert or reject.")
      .def_property_readonly("in_chans", &PackedModel::in_chans)
      .def_property_readonly("num_outputs", &PackedModel::num_outputs);

  py::class_<PackedBlock>(m, "PackedBlock",
                          "One ConvNeXt block with its weights copied into C++ once (the session's block).")
      .def(py::init([](int64_t dim, float eps, const py::dict& weights) {
             if (dim < 1) throw py::value_error("dim must be >= 1");
             if (!(eps > 0.f)) throw py::value_error("eps must be > 0");
             return new PackedBlock(dim, eps, "", dict_lookup(weights));
           }),
           py::arg("dim"), py::arg("eps"), py::arg("weights"),
           "weights: the block's state_dict (conv_dw.weight, norm.*, mlp.fc1.*, mlp.fc2.*, gamma).")
      .def(
          "forward",
          [](const PackedBlock& self, const py::handle& x_, const py::handle& out_) {
            auto x = checked_array(x_, "x", {-1, -1, self.dim()});
            const int64_t batch = x.shape(0), t = x.shape(1);
            auto out = checked_array(out_, "out", {batch, t, self.dim()}, true);
            if (out.data() == x.data()) throw py::value_error("out must not share memory with x");
            std::vector<float> scratch(static_cast<size_t>(batch * t * self.dim()));
            const Isa isa = active_isa();
            py::gil_scoped_release release;
            std::copy(cdata(x), cdata(x) + scratch.size(), mdata(out));
            self.forward(isa, mdata(out), scratch.data(), batch, t);
          },
          py::arg("x"), py::arg("out"), "x: [B, T, dim] channels-last float32 → out (same shape).")
      .def_property_readonly("dim", &PackedBlock::dim);
}

}  // namespace convnext_fast
