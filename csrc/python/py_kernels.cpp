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
std::vector<float> taps_by_channel(const py::array& w, int64_t c);

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
  const std::vector<float> w_kc = taps_by_channel(w, c);
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  dwconv_layernorm(isa, cdata(x), batch, t, c, w_kc.data(), cdata(cb), cdata(nw), cdata(nb), eps, mdata(out));
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
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  bottleneck(isa, cdata(x), cdata(n), batch, t, c, h, cdata(w1), cdata(b1), cdata(w2), cdata(b2), cdata(gamma), scale,
             mdata(out), hidden);
}

// The nn.Conv1d depthwise weight [c, 1, 7] transposed to tap-major [7, c] (contiguous channels per tap).
std::vector<float> taps_by_channel(const py::array& w, int64_t c) {
  std::vector<float> w_kc(static_cast<size_t>(kDwKernel * c));
  for (int64_t ch = 0; ch < c; ++ch)
    for (int k = 0; k < kDwKernel; ++k) w_kc[k * c + ch] = cdata(w)[ch * kDwKernel + k];
  return w_kc;
}

void py_dwconv_layernorm_backward(const py::handle& grad_, const py::handle& x_, const py::handle& conv_weight_,
                                  const py::handle& conv_bias_, const py::handle& norm_weight_, float eps,
                                  const py::handle& dx_, const py::handle& dconv_w_, const py::handle& dconv_b_,
                                  const py::handle& dnorm_w_, const py::handle& dnorm_b_) {
  auto x = checked_array(x_, "x", {-1, -1, -1});
  const int64_t batch = x.shape(0), t = x.shape(1), c = x.shape(2);
  auto grad = checked_array(grad_, "grad", {batch, t, c});
  auto w = checked_array(conv_weight_, "conv_weight", {c, 1, kDwKernel});
  auto cb = checked_array(conv_bias_, "conv_bias", {c});
  auto nw = checked_array(norm_weight_, "norm_weight", {c});
  auto dx = checked_array(dx_, "dx", {batch, t, c}, true);
  auto dw = checked_array(dconv_w_, "dconv_weight", {c, 1, kDwKernel}, true);
  auto dcb = checked_array(dconv_b_, "dconv_bias", {c}, true);
  auto dnw = checked_array(dnorm_w_, "dnorm_weight", {c}, true);
  auto dnb = checked_array(dnorm_b_, "dnorm_bias", {c}, true);
  if (!(eps > 0.f)) throw py::value_error("eps must be > 0");
  if (dx.data() == x.data() || dx.data() == grad.data()) throw py::value_error("dx must not share memory with x or grad");
  const std::vector<float> w_kc = taps_by_channel(w, c);
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  dwconv_layernorm_backward(isa, cdata(x), cdata(grad), batch, t, c, w_kc.data(), cdata(cb), cdata(nw), eps, mdata(dx),
                            mdata(dw), mdata(dcb), mdata(dnw), mdata(dnb));
}

void py_bottleneck_backward(const py::handle& grad_, const py::handle& n_, const py::handle& hidden_,
                            const py::handle& w1_, const py::handle& w2_, const py::handle& b2_,
                            const py::handle& gamma_, const py::handle& sample_scale_, const py::handle& dn_,
                            const py::handle& dw1_, const py::handle& db1_, const py::handle& dw2_,
                            const py::handle& db2_, const py::handle& dgamma_) {
  auto n = checked_array(n_, "n", {-1, -1, -1});
  const int64_t batch = n.shape(0), t = n.shape(1), c = n.shape(2);
  auto grad = checked_array(grad_, "grad", {batch, t, c});
  auto w1 = checked_array(w1_, "fc1_weight", {-1, c});
  const int64_t h = w1.shape(0);
  auto hidden = checked_array(hidden_, "hidden", {batch, t, h});
  auto w2 = checked_array(w2_, "fc2_weight", {c, h});
  auto b2 = checked_array(b2_, "fc2_bias", {c});
  auto gamma = checked_array(gamma_, "gamma", {c});
  auto dn = checked_array(dn_, "dn", {batch, t, c}, true);
  auto dw1 = checked_array(dw1_, "dfc1_weight", {h, c}, true);
  auto db1 = checked_array(db1_, "dfc1_bias", {h}, true);
  auto dw2 = checked_array(dw2_, "dfc2_weight", {c, h}, true);
  auto db2 = checked_array(db2_, "dfc2_bias", {c}, true);
  auto dgamma = checked_array(dgamma_, "dgamma", {c}, true);
  const float* scale = nullptr;
  py::array scale_arr;
  if (!sample_scale_.is_none()) {
    scale_arr = checked_array(sample_scale_, "sample_scale", {batch});
    scale = cdata(scale_arr);
  }
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  bottleneck_backward(isa, cdata(grad), cdata(n), cdata(hidden), batch, t, c, h, cdata(w1), cdata(w2), cdata(b2),
                      cdata(gamma), scale, mdata(dn), mdata(dw1), mdata(db1), mdata(dw2), mdata(db2), mdata(dgamma));
}

void py_layernorm(const py::handle& x_, const py::handle& w_, const py::handle& b_, float eps, const py::handle& out_) {
  auto x = checked_array(x_, "x", {-1, -1});
  const int64_t rows = x.shape(0), c = x.shape(1);
  auto w = checked_array(w_, "weight", {c});
  auto b = checked_array(b_, "bias", {c});
  auto out = checked_array(out_, "out", {rows, c}, true);
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  layernorm_rows(isa, cdata(x), rows, c, cdata(w), cdata(b), eps, mdata(out));
}

void py_linear(const py::handle& x_, const py::handle& w_, const py::handle& b_, const py::handle& out_) {
  auto x = checked_array(x_, "x", {-1, -1});
  const int64_t rows = x.shape(0), k = x.shape(1);
  auto w = checked_array(w_, "weight", {-1, k});
  const int64_t n = w.shape(0);
  auto b = checked_array(b_, "bias", {n});
  auto out = checked_array(out_, "out", {rows, n}, true);
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  linear_rows(isa, cdata(x), rows, k, cdata(w), cdata(b), n, mdata(out));
}

// nn.Linear over weights packed once (the inference session's GEMM), for tests and benchmarks.
struct PackedLinear {
  PackedWeight packed;
  std::vector<float> bias;
};

PackedLinear* make_packed_linear(const py::handle& w_, const py::handle& b_, bool bf16) {
  auto w = checked_array(w_, "weight", {-1, -1});
  const int64_t n = w.shape(0), k = w.shape(1);
  if (n < 1 || k < 1) throw py::value_error("weight must be [N >= 1, K >= 1]");
  auto b = checked_array(b_, "bias", {n});
  auto* lin = new PackedLinear;
  lin->bias.assign(cdata(b), cdata(b) + n);
  lin->packed = bf16 ? pack_weight_bf16(cdata(w), n, k) : pack_weight(cdata(w), n, k);
  return lin;
}

void py_packed_linear(const PackedLinear& lin, const py::handle& x_, const py::handle& out_) {
  const int64_t n = lin.packed.n, k = lin.packed.k;
  auto x = checked_array(x_, "x", {-1, k});
  const int64_t rows = x.shape(0);
  auto out = checked_array(out_, "out", {rows, n}, true);
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  linear_rows(isa, cdata(x), rows, k, nullptr, lin.bias.data(), n, mdata(out), &lin.packed);
}

void py_gelu(const py::handle& x_, const py::handle& out_) {
  auto x = checked_array(x_, "x", {-1});
  auto out = checked_array(out_, "out", {x.shape(0)}, true);
  const Isa isa = active_isa();
  py::gil_scoped_release release;
  gelu(isa, cdata(x), x.shape(0), mdata(out));
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
  m.def("dwconv_layernorm_backward", &py_dwconv_layernorm_backward, py::arg("grad"), py::arg("x"),
        py::arg("conv_weight"), py::arg("conv_bias"), py::arg("norm_weight"), py::arg("eps"), py::arg("dx"),
        py::arg("dconv_weight"), py::arg("dconv_bias"), py::arg("dnorm_weight"), py::arg("dnorm_bias"),
        "Gradients of dwconv_layernorm for grad of its output (conv and statistics recomputed); float32.");
  m.def("bottleneck_backward", &py_bottleneck_backward, py::arg("grad"), py::arg("n"), py::arg("hidden"),
        py::arg("fc1_weight"), py::arg("fc2_weight"), py::arg("fc2_bias"), py::arg("gamma"), py::arg("sample_scale"),
        py::arg("dn"), py::arg("dfc1_weight"), py::arg("dfc1_bias"), py::arg("dfc2_weight"), py::arg("dfc2_bias"),
        py::arg("dgamma"),
        "Gradients of bottleneck (all but x's, which is grad itself) from the saved pre-GELU hidden; float32.");
  m.def("layernorm", &py_layernorm, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"),
        py::arg("out"), "Row-wise LayerNorm of x[rows, C].");
  m.def("linear", &py_linear, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"),
        "out[rows, N] = x[rows, K]·weight[N, K]ᵀ + bias (OpenBLAS, rows or columns split over threads).");
  py::class_<PackedLinear>(m, "PackedLinear",
                           "out = x·Wᵀ + b over W packed once into 16-column panels (the packed GEMM at the ISA "
                           "level of each call: see isa()).")
      .def(py::init(&make_packed_linear), py::arg("weight"), py::arg("bias"), py::arg("bf16") = false,
           "bf16: keep the weight in bf16 (activations rounded to bf16, fp32 accumulation).")
      .def("forward", &py_packed_linear, py::arg("x"), py::arg("out"), "x[rows, K] → out[rows, N].");
  m.def("gelu", &py_gelu, py::arg("x"), py::arg("out"), "Exact-erf GELU of a 1-D array.");
  m.def("get_num_threads", &num_threads, "Threads the kernels' OpenMP loops use.");
  m.def("set_num_threads", &set_num_threads, py::arg("n"), "Set the threads the kernels' OpenMP loops use.");
}

}  // namespace convnext_fast
