#pragma once
// A whole ConvNeXt-1D forward in one C++ call, over weights copied (and re-laid-out) once at construction.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "isa.h"
#include "packed_gemm.h"

namespace convnext_fast {

// Returns the float32 values of the named state_dict entry, checked against the expected shape.
using WeightLookup = std::function<std::vector<float>(const std::string& name, const std::vector<int64_t>& shape)>;

// One ConvNeXt block (dwconv + LayerNorm, then the GELU bottleneck with layer scale and residual) over
// weights copied in once; `prefix` + "conv_dw.weight" etc. name its state_dict entries.
class PackedBlock {
 public:
  // bf16: the two linear layers hold bf16 weights (pack_weight_bf16), everything else stays fp32.
  PackedBlock(int64_t dim, float eps, const std::string& prefix, const WeightLookup& lookup, bool bf16 = false);

  // h: [batch, t, dim] channels-last, updated in place; n: scratch of the same size. isa: active_isa(), read
  // by the caller once per call.
  void forward(Isa isa, float* h, float* n, int64_t batch, int64_t t) const;

  int64_t dim() const { return dim_; }

 private:
  int64_t dim_;
  float eps_;
  std::vector<float> dw_kc_, dw_bias_, norm_w_, norm_b_, fc1_w_, fc1_b_, fc2_w_, fc2_b_, gamma_;
  PackedWeight fc1_packed_, fc2_packed_;  // fc1_w_ / fc2_w_ are emptied once packed
};

class PackedModel {
 public:
  static constexpr int64_t kTotalStride = 32;  // stem 4 × three stride-2 downsamples
  static constexpr int64_t kStemStride = 4;

  PackedModel(int64_t in_chans, std::vector<int64_t> dims, std::vector<int64_t> depths, int64_t num_outputs,
              float eps, const WeightLookup& lookup, bool bf16 = false);  // bf16: blocks and downsamples

  // x: [batch, in_chans, t] channels-first (the public model layout), t >= 32; the oldest t % 32 bars are
  // dropped like the reference does. out: [batch, num_outputs]. Every kernel of the forward runs at `isa`
  // (the caller reads active_isa() once: a limit changed meanwhile cannot mix variants within one forward).
  void forward(Isa isa, const float* x, int64_t batch, int64_t t, float* out) const;

  int64_t in_chans() const { return in_chans_; }
  int64_t num_outputs() const { return num_outputs_; }

 private:
  struct Stage {
    int64_t dim = 0;
    bool downsample = false;
    std::vector<float> down_norm_w, down_norm_b, down_w, down_b;  // down_w: [dim, 2·in_dim], tap-major
    PackedWeight down_packed;
    std::vector<PackedBlock> blocks;
  };

  int64_t in_chans_, num_outputs_;
  float eps_;
  std::vector<int64_t> dims_;
  PackedWeight stem_packed_;
  std::vector<float> stem_w_, stem_b_, stem_norm_w_, stem_norm_b_, head_norm_w_, head_norm_b_, head_w_, head_b_;
  std::vector<Stage> stages_;
};

}  // namespace convnext_fast
