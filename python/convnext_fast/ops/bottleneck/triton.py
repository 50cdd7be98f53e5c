"""GELU inverted bottleneck on Triton, registered as ``convnext_fast::bottleneck_triton`` (+ its backward
op) with autograd.

Saved for backward: n (the dwconv_layernorm output, alive anyway as this op's input), the weights, and
z = h W2ᵀ + b2 (C values per row, for dγ). Eager PyTorch keeps the fc1 output (for GELU's backward),
the GELU output (for fc2's) and the fc2 output (for γ's): 9·C values per row. This keeps 8·C fewer per
row and block, 8·M·C·(bytes per element): e.g. 8·8192·384·2 B = 50 MB for each of the nine stage-3
blocks of ``tiny`` in bf16 at B=512, T=256 (M = 512·16 rows).
The backward recomputes the hidden activation from n; its ``[M, 4C]`` buffers live only during that
block's backward.

Dtypes: the GEMM operands (n, weights, the hidden activation, z) are in the op's compute dtype —
the autocast dtype under autocast (:func:`~convnext_fast.ops.triton_utils.compute_dtype`), else x's — and
the residual x and the output keep x's dtype (fp32 for stage 0 under CUDA autocast, whose LayerNorm
returns fp32, as eager autocast keeps it).

The three weight-gradient GEMMs (dW2 = gᵀh, dW1 = daᵀn, dn = da W1) have no elementwise work to fuse,
so they go to ``torch.matmul`` (cuBLAS on CUDA), which is at least as fast as a Triton GEMM there.
"""

from __future__ import annotations

import torch
import triton
from torch.library import triton_op

from ..triton_utils import (
    bucket,
    check_interpreter_mode,
    check_same_device,
    compute_dtype,
    dot_precision,
    launch,
    reduce_rows,
)
from .triton_kernels import (
    BRANCH_GRAD_CHUNK_ROWS,
    BRANCH_GRAD_MAX_PER_THREAD,
    INTERPRETER_FUSED_MLP_CONFIG,
    INTERPRETER_GEMM_CONFIG,
    INTERPRETER_ROW_CONFIG,
    branch_grad_kernel,
    bwd_hidden_kernel,
    fused_mlp_kernel,
    gemm_bias_gelu_kernel,
    gemm_bias_residual_kernel,
    use_fused_mlp,
)

check_interpreter_mode(gemm_bias_gelu_kernel)


def _gemm_grid(m: int, n: int):
    return lambda cfg: (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"]),)


def _check_inputs(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale) -> None:
    if x.ndim != 3:
        raise ValueError(f"x must be channels-last [B, T, C], got shape {tuple(x.shape)}")
    if n.shape != x.shape:
        raise ValueError(f"n must have x's shape {tuple(x.shape)}, got {tuple(n.shape)}")
    c = x.shape[-1]
    if fc1_weight.ndim != 2 or fc1_weight.shape[1] != c:
        raise ValueError(f"fc1_weight must be [hidden, C={c}], got {tuple(fc1_weight.shape)}")
    hidden = fc1_weight.shape[0]
    expected = {"fc1_bias": (hidden,), "fc2_weight": (c, hidden), "fc2_bias": (c,), "gamma": (c,)}
    for name, t in zip(expected, (fc1_bias, fc2_weight, fc2_bias, gamma), strict=True):
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{name} must be {list(expected[name])}, got {list(t.shape)}")
    if sample_scale is not None and tuple(sample_scale.shape) != (x.shape[0],):
        raise ValueError(f"sample_scale must be [B={x.shape[0]}] or None, got {tuple(sample_scale.shape)}")
    check_same_device(x, n=n, fc1_weight=fc1_weight, fc2_weight=fc2_weight)


@triton_op("convnext_fast::bottleneck_triton", mutates_args=())
def bottleneck_fwd(
    x: torch.Tensor,
    n: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    gamma: torch.Tensor,
    sample_scale: torch.Tensor | None,
    save_branch: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """→ ``(out [B, T, C] in x's dtype, z [B·T, C] or empty)``; z = fc2 output before γ, in n's (the
    compute) dtype, kept only for backward."""
    b, t, c = x.shape
    m, hidden = b * t, fc1_weight.shape[0]
    precision = dot_precision(n.dtype)
    out = torch.empty_like(x)
    z = torch.empty((m, c) if save_branch else (0,), device=x.device, dtype=n.dtype)
    has_scale = sample_scale is not None
    scale = sample_scale if has_scale else gamma  # any valid pointer; unread when HAS_SCALE is False
    flags = {"HAS_SCALE": has_scale, "STORE_Z": save_branch, "PRECISION": precision}
    if use_fused_mlp(m, c, n.element_size()):
        launch(
            fused_mlp_kernel, INTERPRETER_FUSED_MLP_CONFIG, lambda cfg: (triton.cdiv(m, cfg["BLOCK_M"]),),
            n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, scale, x, out, z, m, c, hidden, bucket(m), t,
            BLOCK_C=triton.next_power_of_2(c), **flags,
        )  # fmt: skip
        return out, z
    h = torch.empty(m, hidden, device=x.device, dtype=n.dtype)
    launch(
        gemm_bias_gelu_kernel, INTERPRETER_GEMM_CONFIG, _gemm_grid(m, hidden),
        n, fc1_weight, fc1_bias, h, m, hidden, c, bucket(m), PRECISION=precision,
    )  # fmt: skip
    launch(
        gemm_bias_residual_kernel, INTERPRETER_GEMM_CONFIG, _gemm_grid(m, c),
        h, fc2_weight, fc2_bias, gamma, scale, x, out, z, m, c, hidden, bucket(m), t, **flags,
    )  # fmt: skip
    return out, z


@triton_op("convnext_fast::bottleneck_triton_backward", mutates_args=())
def bottleneck_bwd(
    dout: torch.Tensor,
    n: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    gamma: torch.Tensor,
    sample_scale: torch.Tensor | None,
    z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ ``(dn, d fc1_weight, d fc1_bias, d fc2_weight, d fc2_bias, d gamma)``; dx is dout itself.
    ``dout`` is in x's dtype; everything the GEMMs touch is in n's (the compute) dtype."""
    b, t, c = dout.shape
    m, hidden = b * t, fc1_weight.shape[0]
    # Fixed-size chunks (not a function of B or of a tuned block): the partial sums, and so the bits of
    # dγ and db2, depend only on the rows' values and their order.
    n_chunks = triton.cdiv(m, BRANCH_GRAD_CHUNK_ROWS)
    block_c = triton.next_power_of_2(c)
    g = torch.empty(m, c, device=dout.device, dtype=n.dtype)
    partial = torch.empty(n_chunks, 2, c, device=dout.device, dtype=torch.float32)
    has_scale = sample_scale is not None
    launch(
        branch_grad_kernel, INTERPRETER_ROW_CONFIG, lambda meta: (n_chunks,),
        dout, gamma, sample_scale if has_scale else gamma, z, g, partial, m, c, t, BRANCH_GRAD_CHUNK_ROWS,
        HAS_SCALE=has_scale, BLOCK_C=block_c,
        REDUCE_T=reduce_rows(block_c, dout.element_size(), BRANCH_GRAD_MAX_PER_THREAD),
    )  # fmt: skip
    h = torch.empty(m, hidden, device=dout.device, dtype=n.dtype)
    da = torch.empty_like(h)
    launch(
        bwd_hidden_kernel, INTERPRETER_GEMM_CONFIG, _gemm_grid(m, hidden),
        n, fc1_weight, fc1_bias, g, fc2_weight, h, da, m, hidden, c, bucket(m), PRECISION=dot_precision(n.dtype),
    )  # fmt: skip
    n2d = n.reshape(m, c)
    # Second stage of the two-stage reductions: fixed-order sums over chunks (deterministic, no atomics).
    return (
        (da @ fc1_weight).reshape(b, t, c),
        da.t() @ n2d,
        da.sum(0, dtype=torch.float32).to(fc1_bias.dtype),
        g.t() @ h,
        partial[:, 1].sum(0).to(gamma.dtype),
        partial[:, 0].sum(0).to(gamma.dtype),
    )


def _setup_context(ctx, inputs, output) -> None:
    _x, n, fc1_weight, fc1_bias, fc2_weight, _fc2_bias, gamma, sample_scale, _save = inputs
    ctx.has_scale = sample_scale is not None
    ctx.save_for_backward(n, fc1_weight, fc1_bias, fc2_weight, gamma, sample_scale, output[1])


def _backward(ctx, dout, _dz):
    n, fc1_weight, fc1_bias, fc2_weight, gamma, sample_scale, z = ctx.saved_tensors
    if z.numel() == 0:
        raise RuntimeError("bottleneck_triton: backward needs the branch output, which forward did not save")
    dout = dout.contiguous()
    grads = bottleneck_bwd(dout, n, fc1_weight, fc1_bias, fc2_weight, gamma, sample_scale, z)
    return (dout, *grads, None, None)


bottleneck_fwd.register_autograd(_backward, setup_context=_setup_context)


def bottleneck(
    x: torch.Tensor,
    n: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    gamma: torch.Tensor,
    sample_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x + sample_scale·gamma·(GELU(n W1ᵀ + b1) W2ᵀ + b2)``, channels-last (see :mod:`convnext_fast.ops`)."""
    _check_inputs(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale)
    dtype = compute_dtype(x)
    params = [p.to(dtype).contiguous() for p in (fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma)]
    scale = None if sample_scale is None else sample_scale.to(dtype).contiguous()
    tensors = (x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma)
    save_branch = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    return bottleneck_fwd(x.contiguous(), n.to(dtype).contiguous(), *params, scale, save_branch)[0]
