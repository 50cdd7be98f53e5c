#include "packed_model.h"

#include <memory>
#include <stdexcept>

#include "kernels.h"

namespace convnext_fast {

namespace {
// [C, 1, 7] conv weight → [7, C] so the kernel's inner loop runs along contiguous channels.
std::vector<float> taps_major(const std::vector<float>& w, int64_t c, int64_t k) {
  std::vector<float> out(w.size());
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t j = 0; j < k; ++j) out[j * c + ch] = w[ch * k + j];
  return out;
}

// The weight is packed into panels and the row-major copy freed, so the session holds each weight once.
// Every ISA level has a packed kernel (isa.h), so this does not depend on the CPU.
void pack(std::vector<float>& w, int64_t n, int64_t k, PackedWeight* packed, bool bf16 = false) {
  *packed = bf16 ? pack_weight_bf16(w.data(), n, k) : pack_weight(w.data(), n, k);
  std::vector<float>().swap(w);
}
}  // namespace

PackedBlock::PackedBlock(int64_t dim, float eps, const std::string& prefix, const WeightLookup& lookup, bool bf16)
    : dim_(dim), eps_(eps) {
  dw_kc_ = taps_major(lookup(prefix + "conv_dw.weight", {dim, 1, kDwKernel}), dim, kDwKernel);
  dw_bias_ = lookup(prefix + "conv_dw.bias", {dim});
  norm_w_ = lookup(prefix + "norm.weight", {dim});
  norm_b_ = lookup(prefix + "norm.bias", {dim});
  fc1_w_ = lookup(prefix + "mlp.fc1.weight", {4 * dim, dim});
  fc1_b_ = lookup(prefix + "mlp.fc1.bias", {4 * dim});
  fc2_w_ = lookup(prefix + "mlp.fc2.weight", {dim, 4 * dim});
  fc2_b_ = lookup(prefix + "mlp.fc2.bias", {dim});
  gamma_ = lookup(prefix + "gamma", {dim});
  pack(fc1_w_, 4 * dim, dim, &fc1_packed_, bf16);
  pack(fc2_w_, dim, 4 * dim, &fc2_packed_, bf16);
}

void PackedBlock::forward(Isa isa, float* h, float* n, int64_t batch, int64_t t) const {
  convnext_block(isa, h, n, batch, t, dim_, dw_kc_.data(), dw_bias_.data(), norm_w_.data(), norm_b_.data(), eps_,
                 fc1_w_.data(), fc1_b_.data(), fc2_w_.data(), fc2_b_.data(), gamma_.data(), &fc1_packed_,
                 &fc2_packed_);
}

PackedModel::PackedModel(int64_t in_chans, std::vector<int64_t> dims, std::vector<int64_t> depths,
                         int64_t num_outputs, float eps, const WeightLookup& lookup, bool bf16)
    : in_chans_(in_chans), num_outputs_(num_outputs), eps_(eps), dims_(std::move(dims)) {
  if (dims_.size() != 4 || depths.size() != 4) throw std::invalid_argument("dims and depths need 4 entries each");
  const int64_t d0 = dims_[0];
  stem_w_ = lookup("stem.0.weight", {d0, in_chans, kStemStride});  // [D0, Cin·4] as a GEMM weight
  stem_b_ = lookup("stem.0.bias", {d0});
  pack(stem_w_, d0, in_chans * kStemStride, &stem_packed_);
  stem_norm_w_ = lookup("stem.1.weight", {d0});
  stem_norm_b_ = lookup("stem.1.bias", {d0});
  int64_t prev = d0;
  for (size_t s = 0; s < 4; ++s) {
    Stage stage;
    const int64_t dim = dims_[s];
    const std::string p = "stages." + std::to_string(s) + ".";
    stage.dim = dim;
    stage.downsample = prev != dim;
    if (stage.downsample) {
      stage.down_norm_w = lookup(p + "downsample.0.weight", {prev});
      stage.down_norm_b = lookup(p + "downsample.0.bias", {prev});
      // [dim, prev, 2] → [dim, 2, prev]: two consecutive channels-last rows form one GEMM row.
      const auto w = lookup(p + "downsample.1.weight", {dim, prev, 2});
      stage.down_w.resize(w.size());
      for (int64_t o = 0; o < dim; ++o)
        for (int64_t i = 0; i < prev; ++i)
          for (int64_t k = 0; k < 2; ++k) stage.down_w[(o * 2 + k) * prev + i] = w[(o * prev + i) * 2 + k];
      stage.down_b = lookup(p + "downsample.1.bias", {dim});
      pack(stage.down_w, dim, 2 * prev, &stage.down_packed, bf16);
    }
    for (int64_t j = 0; j < depths[s]; ++j)
      stage.blocks.emplace_back(dim, eps, p + "blocks." + std::to_string(j) + ".", lookup, bf16);
    stages_.push_back(std::move(stage));
    prev = dim;
  }
  head_norm_w_ = lookup("head.norm.weight", {prev});
  head_norm_b_ = lookup("head.norm.bias", {prev});
  head_w_ = lookup("head.fc.weight", {num_outputs, prev});
  head_b_ = lookup("head.fc.bias", {num_outputs});
}

void PackedModel::forward(Isa isa, const float* x, int64_t batch, int64_t t, float* out) const {
  if (t < kTotalStride) throw std::invalid_argument("x needs at least 32 time steps (the total stride)");
  const int64_t t0 = t % kTotalStride;  // oldest bars cropped, newest kept
  int64_t tc = (t - t0) / kStemStride;
  int64_t rows = batch * tc;
  const int64_t patch = in_chans_ * kStemStride;

  // rows·C halves/doubles together through the stages; size the buffers for the largest.
  int64_t biggest = rows * std::max(dims_[0], patch);
  for (size_t s = 1; s < 4; ++s) biggest = std::max(biggest, rows * dims_[s]);
  std::unique_ptr<float[]> hbuf(new float[biggest]), nbuf(new float[biggest]);
  float *h = hbuf.get(), *n = nbuf.get();

  // Stem: a k=4, s=4 conv is a GEMM over [Cin·4] patches gathered from the channels-first input.
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < tc; ++i)
      for (int64_t ch = 0; ch < in_chans_; ++ch) {
        const float* src = x + (b * in_chans_ + ch) * t + t0 + i * kStemStride;
        float* dst = n + (b * tc + i) * patch + ch * kStemStride;
        for (int64_t k = 0; k < kStemStride; ++k) dst[k] = src[k];
      }
  int64_t c = dims_[0];
  linear_rows(isa, n, rows, patch, stem_w_.data(), stem_b_.data(), c, h, &stem_packed_);
  layernorm_rows(isa, h, rows, c, stem_norm_w_.data(), stem_norm_b_.data(), eps_, h);

  for (const Stage& stage : stages_) {
    if (stage.downsample) {
      layernorm_rows(isa, h, rows, c, stage.down_norm_w.data(), stage.down_norm_b.data(), eps_, n);
      tc /= 2;
      rows /= 2;
      linear_rows(isa, n, rows, 2 * c, stage.down_w.data(), stage.down_b.data(), stage.dim, h, &stage.down_packed);
      c = stage.dim;
    }
    for (const PackedBlock& block : stage.blocks) block.forward(isa, h, n, batch, tc);
  }

  // Head: mean over time → LayerNorm → linear.
  std::vector<float> pooled(static_cast<size_t>(batch * c), 0.f);
  for (int64_t b = 0; b < batch; ++b) {
    float* pb = pooled.data() + b * c;
    for (int64_t i = 0; i < tc; ++i) {
      const float* row = h + (b * tc + i) * c;
      for (int64_t ch = 0; ch < c; ++ch) pb[ch] += row[ch];
    }
    for (int64_t ch = 0; ch < c; ++ch) pb[ch] /= static_cast<float>(tc);
  }
  layernorm_rows(isa, pooled.data(), batch, c, head_norm_w_.data(), head_norm_b_.data(), eps_, pooled.data());
  linear_rows(isa, pooled.data(), batch, c, head_w_.data(), head_b_.data(), num_outputs_, out);
}

}  // namespace convnext_fast
