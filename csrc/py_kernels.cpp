// numpy bindings of the single kernels: the torch custom ops (ops/*/cpu.py) and the numpy tests call these.
// Outputs are caller-provided buffers so tests can poison them and the ops can hand in torch storage.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "array_checks.h"
#include "bindings.h"
#include "kernels.h"

namespace py = pybind11;

namespace convnext_fast {

namespace {
void py_dwconv_layernorm(const py::handle& x_, const py::handle& conv_weight_, const py::handle& conv_bias_,
                         const py::handle& norm_weight_, const py::handle& norm_bias_, float eps,
                         const py::handle& out_) {
  auto x = checked_array(x_, "x", {-1, -1, -1});
  const int64_t batch = x.shape(0), t = x.shape(1), c = x.shape(2);
  auto w = checked_array(conv_weight_, "conv_weight", {c, 1, kDwKernel});
  auto cb = checked_array(conv_bias_, "conv_bias", {c});
  auto nw = checked_array(norm_weight_, "norm_weight", {c});
  auto nb = checked_array(norm_bias_, "norm_bias", {c});
  auto out = checked_array(out_, "out", {batch, t, c}, true);
  if (!(eps > 0.f)) throw py::value_error("eps must be > 0");
  std::vector<float> w_kc(static_cast<size_t>(kDwKernel * c));
  for (int64_t ch = 0; ch < c; ++ch)
    for (int k = 0; k < kDwKernel; ++k) w_kc[k * c + ch] = cdata(w)[ch * kDwKernel + k];
  py::gil_scoped_release release;
  dwconv_layernorm(cdata(x), batch, t, c, w_kc.data(), cdata(cb), cdata(nw), cdata(nb), eps, mdata(out));
}

void py_bottleneck(const py::handle& x_, const py::handle& n_, const py::handle& w1_, const py::handle& b1_,
                   const py::handle& w2_, const py::handle& b2_, const py::handle& gamma_,
                   const py::handle& sample_scale_, const py::handle& out_, const py::handle& hidden_out_) {
  auto x = checked_array(x_, "x", {-1, -1, -1});
  const int64_t batch = x.shape(0), t = x.shape(1), c = x.shape(2);
  auto n = checked_array(n_, "n", {batch, t, c});
  auto w1 = checked_array(w1_, "fc1_weight", {-1, c});
  const int64_t h = w1.shape(0);
  auto b1 = checked_array(b1_, "fc1_bias", {h});
  auto w2 = checked_array(w2_, "fc2_weight", {c, h});
  auto b2 = checked_array(b2_, "fc2_bias", {c});
  auto gamma = checked_array(gamma_, "gamma", {c});
  auto out = checked_array(out_, "out", {batch, t, c}, true);
  const float* scale = nullptr;
  py::array scale_arr, hidden_arr;
  if (!sample_scale_.is_none()) {
    scale_arr = checked_array(sample_scale_, "sample_scale", {batch});
    scale = cdata(scale_arr);
  }
  float* hidden = nullptr;
  if (!hidden_out_.is_none()) {
    hidden_arr = checked_array(hidden_out_, "hidden_out", {batch, t, h}, true);
    hidden = mdata(hidden_arr);
  }
  if (out.data() == n.data()) throw py::value_error("out must not share memory with n");
  py::gil_scoped_release release;
  bottleneck(cdata(x), cdata(n), batch, t, c, h, cdata(w1), cdata(b1), cdata(w2), cdata(b2), cdata(gamma), scale,
             mdata(out), hidden);
}

void py_layernorm(const py::handle& x_, const py::handle& w_, const py::handle& b_, float eps, const py::handle& out_) {
  auto x = checked_array(x_, "x", {-1, -1});
  const int64_t rows = x.shape(0), c = x.shape(1);
  auto w = checked_array(w_, "weight", {c});
  auto b = checked_array(b_, "bias", {c});
  auto out = checked_array(out_, "out", {rows, c}, true);
  py::gil_scoped_release release;
  layernorm_rows(cdata(x), rows, c, cdata(w), cdata(b), eps, mdata(out));
}

void py_linear(const py::handle& x_, const py::handle& w_, const py::handle& b_, const py::handle& out_) {
  auto x = checked_array(x_, "x", {-1, -1});
  const int64_t rows = x.shape(0), k = x.shape(1);
  auto w = checked_array(w_, "weight", {-1, k});
  const int64_t n = w.shape(0);
  auto b = checked_array(b_, "bias", {n});
  auto out = checked_array(out_, "out", {rows, n}, true);
  py::gil_scoped_release release;
  linear_rows(cdata(x), rows, k, cdata(w), cdata(b), n, mdata(out));
}

// nn.Linear over weights packed once (the inference session's GEMM), for tests and benchmarks.
struct PackedLinear {
  PackedWeight packed;
  std::vector<float> weight, bias;  // weight stays only when this CPU cannot run the packed kernel
};

PackedLinear* make_packed_linear(const py::handle& w_, const py::handle& b_) {
  auto w = checked_array(w_, "weight", {-1, -1});
  const int64_t n = w.shape(0), k = w.shape(1);
  if (n < 1 || k < 1) throw py::value_error("weight must be [N >= 1, K >= 1]");
  auto b = checked_array(b_, "bias", {n});
  auto* lin = new PackedLinear;
  lin->bias.assign(cdata(b), cdata(b) + n);
  if (packed_gemm_supported())
    lin->packed = pack_weight(cdata(w), n, k);
  else
    lin->weight.assign(cdata(w), cdata(w) + n * k);
  lin->packed.n = n;
  lin->packed.k = k;
  return lin;
}

void py_packed_linear(const PackedLinear& lin, const py::handle& x_, const py::handle& out_) {
  const int64_t n = lin.packed.n, k = lin.packed.k;
  auto x = checked_array(x_, "x", {-1, k});
  const int64_t rows = x.shape(0);
  auto out = checked_array(out_, "out", {rows, n}, true);
  py::gil_scoped_release release;
  linear_rows(cdata(x), rows, k, lin.weight.data(), lin.bias.data(), n, mdata(out), &lin.packed);
}

void py_gelu(const py::handle& x_, const py::handle& out_) {
  auto x = checked_array(x_, "x", {-1});
  auto out = checked_array(out_, "out", {x.shape(0)}, true);
  py::gil_scoped_release release;
  gelu(cdata(x), x.shape(0), mdata(out));
}
}  // namespace

void register_kernels(py::module_& m) {
  m.def("dwconv_layernorm", &py_dwconv_layernorm, py::arg("x"), py::arg("conv_weight"), py::arg("conv_bias"),
        py::arg("norm_weight"), py::arg("norm_bias"), py::arg("eps"), py::arg("out"),
        "out[B,T,C] = LayerNorm(depthwise_conv7(x[B,T,C])); all float32, C-contiguous.");
  m.def("bottleneck", &py_bottleneck, py::arg("x"), py::arg("n"), py::arg("fc1_weight"), py::arg("fc1_bias"),
        py::arg("fc2_weight"), py::arg("fc2_bias"), py::arg("gamma"), py::arg("sample_scale"), py::arg("out"),
        py::arg("hidden_out") = py::none(),
        "out = x + sample_scale·gamma·(GELU(n·W1ᵀ+b1)·W2ᵀ+b2); hidden_out (optional) gets n·W1ᵀ+b1.");
  m.def("layernorm", &py_layernorm, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("out"), "Row-wise LayerNorm of x[rows, C].");
  m.def("linear", &py_linear, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        "out[rows, N] = x[rows, K]·weight[N, K]ᵀ + bias (OpenBLAS, rows or columns split over threads).");
  py::class_<PackedLinear>(m, "PackedLinear",
                           "out = x·Wᵀ + b over W packed once into 16-column panels (AVX-512 or AVX2/FMA kernel; "
                           "OpenBLAS on CPUs without AVX2).")
      .def(py::init(&make_packed_linear), py::arg("weight"), py::arg("bias"))
      .def("forward", &py_packed_linear, py::arg("x"), py::arg("out"), "x[rows, K] → out[rows, N].")
      .def_property_readonly("packed", [](const PackedLinear& lin) { return !lin.packed.empty(); });
  m.def("avx512_supported", &avx512_supported, "This CPU has AVX-512F.");
  m.def("uses_avx512", &uses_avx512, "The packed GEMM runs its AVX-512 kernel.");
  m.def("set_use_avx512", &set_use_avx512, py::arg("on"),
        "Choose the packed GEMM's AVX-512 kernel (default where supported) or the AVX2 one; returns the "
        "previous choice. For tests and benchmarks.");
  m.def("gelu", &py_gelu, py::arg("x"), py::arg("out"), "Exact-erf GELU of a 1-D array.");
  m.def("get_num_threads", &num_threads, "Threads the kernels' OpenMP loops use.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Set the threads the kernels' OpenMP loops use.");
}

}  // namespace convnext_fast
