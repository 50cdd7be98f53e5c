"""GELU inverted bottleneck on the C++ kernel: the torch custom op ``convnext_fast::bottleneck_cpu`` under
torch.compile (an opaque node with a fake), an autograd.Function over the same kernels in eager mode.

When autograd needs it, the kernel also writes the pre-GELU hidden activation, from which the C++ backward
(``convnext_fast::bottleneck_backward_cpu``: four OpenBLAS GEMMs, GELU' and the layer-scale / drop-path
terms in fused passes) runs without recomputing fc1; otherwise the hidden block never leaves the cache.
float64 runs the reference and a torch-op backward (for ``gradcheck``); bf16/fp16 compute in float32 and
cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import _cpu_common
from .._cpu_common import as_f32_numpy as _f32
from . import reference

_EMPTY = (0,)


def check_args(x: torch.Tensor, n: torch.Tensor, fc1_weight: torch.Tensor) -> None:
    """Clear errors for what the kernel cannot take (the other shapes are checked in C++)."""
    for name, t in (("x", x), ("n", n)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise ValueError(
                f"{name} must be a [B, T, C] tensor, got {getattr(t, 'shape', type(t).__name__)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU for the cpu backend, got {t.device}")
    if n.shape != x.shape:
        raise ValueError(f"n must have the shape of x {tuple(x.shape)}, got {tuple(n.shape)}")
    if fc1_weight.ndim != 2 or fc1_weight.shape[1] != x.shape[-1]:
        raise ValueError(f"fc1_weight must have shape [H, {x.shape[-1]}], got {tuple(fc1_weight.shape)}")


@torch.library.custom_op("convnext_fast::bottleneck_cpu", mutates_args=(), device_types="cpu")
def bottleneck_op(
    x: torch.Tensor,
    n: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    gamma: torch.Tensor,
    sample_scale: torch.Tensor | None,
    save_hidden: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(y, hidden)``; ``hidden`` is ``n·W1ᵀ + b1`` when ``save_hidden`` else an empty tensor."""
    return _forward(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, save_hidden)


def _forward(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, save_hidden):
    """``(y, hidden)``: the kernel call behind both the custom op and the eager path."""
    if x.dtype == torch.float64:
        y = reference.bottleneck(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale)
        hidden = F.linear(n, fc1_weight, fc1_bias) if save_hidden else x.new_empty(_EMPTY)
        return y.to(x.dtype), hidden.to(x.dtype)
    b, t, _ = x.shape
    y = torch.empty(x.shape, dtype=torch.float32)
    hidden = torch.empty((b, t, fc1_weight.shape[0]) if save_hidden else _EMPTY, dtype=torch.float32)
    _cpu_common.kernels().bottleneck(
        _f32(x),
        _f32(n),
        _f32(fc1_weight),
        _f32(fc1_bias),
        _f32(fc2_weight),
        _f32(fc2_bias),
        _f32(gamma),
        None if sample_scale is None else _f32(sample_scale),
        y.numpy(),
        hidden.numpy() if save_hidden else None,
    )
    if x.dtype == torch.float32:
        return y, hidden
    return y.to(x.dtype), hidden.to(x.dtype)


@bottleneck_op.register_fake
def _(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, save_hidden):
    shape = (x.shape[0], x.shape[1], fc1_weight.shape[0]) if save_hidden else _EMPTY
    return torch.empty_like(x), x.new_empty(shape)


def _save(ctx, x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, hidden):
    """What the backward needs, for the custom op's autograd and the eager Function alike."""
    ctx.save_for_backward(n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, hidden)
    ctx.x_dtype = x.dtype


def _input_grads(ctx, grad_y, gradients) -> tuple:
    """``(dx, dn, dfc1_weight, dfc1_bias, dfc2_weight, dfc2_bias, dgamma)`` from what :func:`_save` kept;
    ``gradients`` is the backward custom op (traced under torch.compile) or its plain kernel call."""
    n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, hidden = ctx.saved_tensors
    grads = gradients(
        grad_y.contiguous(), n, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale
    )
    return (grad_y.to(ctx.x_dtype), *grads)


def _setup_context(ctx, inputs, output):
    _save(ctx, *inputs[:-1], output[1])
    # hidden is an output only so that it can be saved; without this autograd zero-fills a [B, T, 4C]
    # gradient for it on every backward (it showed up as aten::fill_ in the training profile)
    ctx.set_materialize_grads(False)


def _backward_torch(
    grad_y, n, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, dtype
):
    """The same gradients in torch ops, for float64 (gradcheck)."""
    c, h = fc2_weight.shape
    n2 = n.to(dtype).reshape(-1, c)
    w1, w2, g = fc1_weight.to(dtype), fc2_weight.to(dtype), gamma.to(dtype)
    z = hidden.to(dtype).reshape(-1, h) if hidden.numel() else F.linear(n2, w1, fc1_bias.to(dtype))
    act = F.gelu(z)
    gs = grad_y.to(dtype)
    if sample_scale is not None:
        gs = gs * sample_scale.to(dtype).view(-1, 1, 1)
    gs = gs.reshape(-1, c)
    # branch = act·W2ᵀ + b2, so Σ_rows gs ⊙ (act·W2ᵀ) = rowsum(W2 ⊙ gsᵀ·act): dgamma and dW2 share one GEMM.
    gs_act = gs.t() @ act
    gs_sum = gs.sum(0)
    d_gamma = (w2 * gs_act).sum(1) + gs_sum * fc2_bias.to(dtype)
    dz = torch.ops.aten.gelu_backward((gs * g) @ w2, z)
    return (dz @ w1).view(n.shape), dz.t() @ n2, dz.sum(0), g[:, None] * gs_act, g * gs_sum, d_gamma


@torch.library.custom_op("convnext_fast::bottleneck_backward_cpu", mutates_args=(), device_types="cpu")
def bottleneck_backward_op(
    grad_y: torch.Tensor,
    n: torch.Tensor,
    hidden: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    gamma: torch.Tensor,
    sample_scale: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dn, dfc1_weight, dfc1_bias, dfc2_weight, dfc2_bias, dgamma)`` in n's / the weights' dtypes. float32
    (and bf16/fp16, computed in float32) runs the C++ backward over the saved pre-GELU ``hidden``; float64 and
    an empty ``hidden`` run torch ops."""
    return _gradients(grad_y, n, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale)


def _gradients(grad_y, n, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale):
    """The backward kernel call behind both the custom op and the eager path."""
    out_dtypes = (n.dtype, fc1_weight.dtype, fc1_bias.dtype, fc2_weight.dtype, fc2_bias.dtype, gamma.dtype)
    if n.dtype == torch.float64 or hidden.numel() == 0:
        dtype = torch.float64 if n.dtype == torch.float64 else torch.float32
        grads = _backward_torch(
            grad_y, n, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, dtype
        )
        return tuple(gr.to(dt) for gr, dt in zip(grads, out_dtypes, strict=True))
    c, h = fc2_weight.shape
    grads = (
        torch.empty(n.shape, dtype=torch.float32),
        torch.empty((h, c), dtype=torch.float32),
        torch.empty(h, dtype=torch.float32),
        torch.empty((c, h), dtype=torch.float32),
        torch.empty(c, dtype=torch.float32),
        torch.empty(c, dtype=torch.float32),
    )
    _cpu_common.kernels().bottleneck_backward(
        _f32(grad_y),
        _f32(n),
        _f32(hidden),
        _f32(fc1_weight),
        _f32(fc2_weight),
        _f32(fc2_bias),
        _f32(gamma),
        None if sample_scale is None else _f32(sample_scale),
        *(g.numpy() for g in grads),
    )
    return tuple(gr if gr.dtype == dt else gr.to(dt) for gr, dt in zip(grads, out_dtypes, strict=True))


@bottleneck_backward_op.register_fake
def _(grad_y, n, hidden, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale):
    return (
        torch.empty_like(n),
        torch.empty_like(fc1_weight),
        torch.empty_like(fc1_bias),
        torch.empty_like(fc2_weight),
        torch.empty_like(fc2_bias),
        torch.empty_like(gamma),
    )


def _backward(ctx, grad_y, _grad_hidden):
    if grad_y is None:  # only hidden was used downstream: it carries no gradient by design
        return (None,) * 9
    return (*_input_grads(ctx, grad_y, bottleneck_backward_op), None, None)


bottleneck_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerBottleneck(torch.autograd.Function):
    """The same kernels and saved tensors as the custom op's autograd, without its dispatch. Outside
    torch.compile the custom op's layers (torch.library's Python wrappers, dynamo's disable guard) cost
    ~0.17 ms per call and backward: on a block too small to time the kernel, 433 µs through the op
    against 263 µs through this Function; over atto's 24 op calls, ~3 ms of its B=32 training step
    (benchmarks/README.md)."""

    @staticmethod
    def forward(ctx, x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale):
        y, hidden = _forward(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, True)
        _save(ctx, x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, hidden)
        return y

    @staticmethod
    @once_differentiable  # the C++ gradients are not themselves differentiable: a clear error, not zeros
    def backward(ctx, grad_y):
        return (*_input_grads(ctx, grad_y, _gradients), None)


def _composition(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale):
    branch = F.linear(F.gelu(F.linear(n, fc1_weight, fc1_bias)), fc2_weight, fc2_bias)
    # gamma and the drop-path factor folded into one small [B, 1, C] scale: one pass over the branch
    scale = gamma if sample_scale is None else gamma * sample_scale.view(-1, 1, 1)
    return torch.addcmul(x, branch, scale)


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
    """``x + sample_scale·gamma·(GELU(n·W1ᵀ+b1)·W2ᵀ+b2)`` for channels-last ``[B, T, C]`` on the C++ kernel."""
    check_args(x, n, fc1_weight)
    params = (x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma)
    save_hidden = torch.is_grad_enabled() and any(p.requires_grad for p in params)
    if save_hidden and _cpu_common.TRAIN_COMPOSITION and all(p.dtype == torch.float32 for p in params):
        return _composition(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale)
    if torch.compiler.is_compiling():  # the custom op: an opaque node with a fake for tracing
        y, _ = bottleneck_op(
            x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, save_hidden
        )
        return y
    if save_hidden:
        return _EagerBottleneck.apply(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale)
    return _forward(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale, False)[0]
