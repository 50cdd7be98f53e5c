"""dwconv + LayerNorm on Triton, registered as ``convnext_fast::dwconv_layernorm_triton`` (+ its backward op)
with autograd, so ``torch.compile`` sees the kernels and eager autograd trains through them.

Saved for backward: x (already alive as the block input), mean and rstd (2 fp32 per row); the conv output
is recomputed rather than stored.

Dtypes: the kernels read x in its own dtype and compute in fp32; the output is in the op's compute dtype
(:func:`~convnext_fast.ops.triton_utils.compute_dtype`): under autocast the autocast dtype — what the
bottleneck's GEMMs consume — even when x is fp32 (stage 0 under CUDA autocast, whose LayerNorm returns fp32).
"""

from __future__ import annotations

import torch
import triton
from torch.library import triton_op

from ..triton_utils import (
    CHUNK_ROWS,
    bucket,
    check_interpreter_mode,
    check_same_device,
    compute_dtype,
    launch,
    reduce_rows,
)
from .triton_kernels import (
    BWD_CONV_MAX_PER_THREAD,
    BWD_NORM_MAX_PER_THREAD,
    INTERPRETER_CONFIG,
    MAX_PER_THREAD,
    dwconv_layernorm_bwd_conv_kernel,
    dwconv_layernorm_bwd_norm_kernel,
    dwconv_layernorm_fwd_kernel,
)

check_interpreter_mode(dwconv_layernorm_fwd_kernel)


# Grid axis 1 holds a sample's tiles (CUDA caps it at 65,535): the smallest tiles are 2 rows forward,
# CHUNK_ROWS backward.
MAX_T = 65_535 * 2


def _check_inputs(x, conv_weight, conv_bias, norm_weight, norm_bias) -> None:
    if x.ndim != 3:
        raise ValueError(f"x must be channels-last [B, T, C], got shape {tuple(x.shape)}")
    if x.shape[1] > MAX_T:
        raise ValueError(f"x has T={x.shape[1]} time steps; the Triton kernels take at most {MAX_T}")
    c = x.shape[-1]
    if conv_weight.ndim != 3 or conv_weight.shape[0] != c or conv_weight.shape[1] != 1:
        raise ValueError(f"conv_weight must be [C={c}, 1, K], got {tuple(conv_weight.shape)}")
    if conv_weight.shape[2] % 2 == 0:
        raise ValueError(
            f"conv_weight needs an odd kernel size for 'same' padding, got K={conv_weight.shape[2]}"
        )
    for name, t in (("conv_bias", conv_bias), ("norm_weight", norm_weight), ("norm_bias", norm_bias)):
        if tuple(t.shape) != (c,):
            raise ValueError(f"{name} must be [C={c}], got {tuple(t.shape)}")
    check_same_device(x, conv_weight=conv_weight, norm_weight=norm_weight)


@triton_op("convnext_fast::dwconv_layernorm_triton", mutates_args=())
def dwconv_layernorm_fwd(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ ``(out [B, T, C] in norm_weight's dtype, mean [B·T] fp32, rstd [B·T] fp32)``."""
    b, t, c = x.shape
    block_c = triton.next_power_of_2(c)
    out = torch.empty(x.shape, device=x.device, dtype=norm_weight.dtype)
    mean = torch.empty(b * t, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    launch(
        dwconv_layernorm_fwd_kernel,
        INTERPRETER_CONFIG,
        lambda cfg: (b, triton.cdiv(t, cfg["REDUCE_T"] * cfg["SUBTILES"])),
        x, conv_weight, conv_bias, norm_weight, norm_bias, out, mean, rstd, t, c, bucket(t), 1.0 / c, eps,
        K=conv_weight.shape[-1], BLOCK_C=block_c, REDUCE_T=reduce_rows(block_c, x.element_size(), MAX_PER_THREAD),
    )  # fmt: skip
    return out, mean, rstd


@triton_op("convnext_fast::dwconv_layernorm_triton_backward", mutates_args=())
def dwconv_layernorm_bwd(
    dout: torch.Tensor,
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    mean: torch.Tensor,
    rstd: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ ``(dx, d conv_weight, d conv_bias, d norm_weight, d norm_bias)``."""
    b, t, c = x.shape
    k = conv_weight.shape[-1]
    # Fixed-size chunks of each sample (not a function of B or of a tuned block): every partial, and so
    # every gradient bit, depends only on the values and the sample's length.
    n_chunks = triton.cdiv(t, CHUNK_ROWS)
    block_c = triton.next_power_of_2(c)
    dy = torch.empty(x.shape, device=x.device, dtype=torch.float32)
    norm_partial = torch.empty(b * n_chunks, 2, c, device=x.device, dtype=torch.float32)
    conv_partial = torch.empty(b * n_chunks, k + 1, c, device=x.device, dtype=torch.float32)
    dx = torch.empty_like(x)
    launch(
        dwconv_layernorm_bwd_norm_kernel,
        INTERPRETER_CONFIG,
        lambda meta: (b, n_chunks),
        x, conv_weight, conv_bias, norm_weight, dout, mean, rstd, dy, norm_partial, t, c, bucket(t), 1.0 / c,
        CHUNK_ROWS,
        K=k, BLOCK_C=block_c, REDUCE_T=reduce_rows(block_c, x.element_size(), BWD_NORM_MAX_PER_THREAD),
    )  # fmt: skip
    launch(
        dwconv_layernorm_bwd_conv_kernel,
        INTERPRETER_CONFIG,
        lambda meta: (b, n_chunks),
        x, conv_weight, dy, dx, conv_partial, t, c, bucket(t), CHUNK_ROWS,
        K=k, BLOCK_C=block_c, BLOCK_K=triton.next_power_of_2(k + 1),
        REDUCE_T=reduce_rows(block_c, x.element_size(), BWD_CONV_MAX_PER_THREAD),
    )  # fmt: skip
    # Second stage of the reductions: a fixed-order sum over the chunks (deterministic, unlike atomics).
    # Each gradient is its own sum: custom ops may not return views of one another.
    return (
        dx,
        conv_partial[:, :k].sum(0).t().reshape(c, 1, k).to(conv_weight.dtype),
        conv_partial[:, k].sum(0).to(conv_bias.dtype),
        norm_partial[:, 0].sum(0).to(norm_weight.dtype),
        norm_partial[:, 1].sum(0).to(norm_weight.dtype),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, conv_weight, conv_bias, norm_weight, _norm_bias, _eps = inputs
    _out, mean, rstd = output
    ctx.save_for_backward(x, conv_weight, conv_bias, norm_weight, mean, rstd)


def _backward(ctx, dout, _dmean, _drstd):
    x, conv_weight, conv_bias, norm_weight, mean, rstd = ctx.saved_tensors
    dx, dw, dcb, dnw, dnb = dwconv_layernorm_bwd(
        dout.contiguous(), x, conv_weight, conv_bias, norm_weight, mean, rstd
    )
    return dx, dw, dcb, dnw, dnb, None


dwconv_layernorm_fwd.register_autograd(_backward, setup_context=_setup_context)


def dwconv_layernorm(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``LayerNorm(dwconv(x))`` for channels-last ``x [B, T, C]`` (see :mod:`convnext_fast.ops`)."""
    _check_inputs(x, conv_weight, conv_bias, norm_weight, norm_bias)
    # The conv's parameters stay in x's dtype (its gradients accumulate in fp32 either way); the norm's
    # take the compute dtype, which is also the output's.
    conv = [p.to(x.dtype).contiguous() for p in (conv_weight, conv_bias)]
    norm = [p.to(compute_dtype(x)).contiguous() for p in (norm_weight, norm_bias)]
    return dwconv_layernorm_fwd(x.contiguous(), *conv, *norm, float(eps))[0]
