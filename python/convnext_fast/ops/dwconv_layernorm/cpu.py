"""dwconv + LayerNorm on the C++ kernel: the torch custom op ``convnext_fast::dwconv_layernorm_cpu`` under
torch.compile, an autograd.Function over the same kernels in eager mode.

float32 (and bf16/fp16, computed in float32 and cast back) runs the fused kernel forward and backward
(``convnext_fast::dwconv_layernorm_backward_cpu``); float64 runs the reference and a torch-op backward so
``gradcheck`` can check the backward's formulas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .. import _cpu_common
from .._cpu_common import as_f32_numpy as _f32
from . import reference

KERNEL = 7


def check_args(x: torch.Tensor, conv_weight: torch.Tensor, conv_bias: torch.Tensor) -> None:
    """Clear errors for what the kernel cannot take (shapes of the small vectors are checked in C++)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        raise ValueError(f"x must be a [B, T, C] tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    for name, t in (("x", x), ("conv_weight", conv_weight), ("conv_bias", conv_bias)):
        if t.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU for the cpu backend, got {t.device}")
    c = x.shape[-1]
    if tuple(conv_weight.shape) != (c, 1, KERNEL):
        raise ValueError(
            f"conv_weight must have shape [{c}, 1, {KERNEL}] for x with C={c}, got {tuple(conv_weight.shape)}"
        )


@torch.library.custom_op("convnext_fast::dwconv_layernorm_cpu", mutates_args=(), device_types="cpu")
def dwconv_layernorm_op(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    return _forward(x, conv_weight, conv_bias, norm_weight, norm_bias, eps)


def _forward(x, conv_weight, conv_bias, norm_weight, norm_bias, eps):
    """The kernel call behind both the custom op and the eager path."""
    if x.dtype == torch.float64:
        return reference.dwconv_layernorm(x, conv_weight, conv_bias, norm_weight, norm_bias, eps).to(x.dtype)
    out = torch.empty(x.shape, dtype=torch.float32)
    _cpu_common.kernels().dwconv_layernorm(
        _f32(x), _f32(conv_weight), _f32(conv_bias), _f32(norm_weight), _f32(norm_bias), eps, out.numpy()
    )
    return out if x.dtype == torch.float32 else out.to(x.dtype)


@dwconv_layernorm_op.register_fake
def _(x, conv_weight, conv_bias, norm_weight, norm_bias, eps):
    return torch.empty_like(x)


def _save(ctx, x, conv_weight, conv_bias, norm_weight, norm_bias, eps):
    """What the backward needs, for the custom op's autograd and the eager Function alike."""
    ctx.save_for_backward(x, conv_weight, conv_bias, norm_weight, norm_bias)
    ctx.eps = eps


def _input_grads(ctx, grad, gradients) -> tuple:
    """``(dx, dconv_weight, dconv_bias, dnorm_weight, dnorm_bias, None)`` from what :func:`_save` kept;
    ``gradients`` is the backward custom op (traced under torch.compile) or its plain kernel call."""
    x, conv_weight, conv_bias, norm_weight, norm_bias = ctx.saved_tensors
    return (*gradients(grad.contiguous(), x, conv_weight, conv_bias, norm_weight, norm_bias, ctx.eps), None)


def _setup_context(ctx, inputs, output):
    _save(ctx, *inputs)


def _backward_torch(grad, x, conv_weight, conv_bias, norm_weight, norm_bias, eps, dtype):
    """The same gradients in torch ops, for float64 (gradcheck)."""
    xt = x.to(dtype).transpose(1, 2)
    w, c = conv_weight.to(dtype), x.shape[-1]
    y = F.conv1d(xt, w, conv_bias.to(dtype), padding=KERNEL // 2, groups=c).transpose(1, 2)
    # one forward LayerNorm for mean/rstd, then aten's fused LayerNorm backward (dy, dweight, dbias)
    nw, nb = norm_weight.to(dtype), norm_bias.to(dtype)
    _, mean, rstd = torch.native_layer_norm(y, [c], nw, nb, eps)
    dy, d_norm_weight, d_norm_bias = torch.ops.aten.native_layer_norm_backward(
        grad.to(dtype), y, [c], mean, rstd, nw, nb, [True, True, True]
    )
    dx, dw, db = torch.ops.aten.convolution_backward(
        dy.transpose(1, 2), xt, w, [c], [1], [KERNEL // 2], [1], False, [0], c, [True, True, True]
    )
    return dx.transpose(1, 2), dw, db, d_norm_weight, d_norm_bias


@torch.library.custom_op("convnext_fast::dwconv_layernorm_backward_cpu", mutates_args=(), device_types="cpu")
def dwconv_layernorm_backward_op(
    grad: torch.Tensor,
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dconv_weight, dconv_bias, dnorm_weight, dnorm_bias)`` in the inputs' dtypes. float32 (and
    bf16/fp16, computed in float32) runs the C++ backward, which recomputes the conv and its statistics row
    by row; float64 runs torch ops."""
    return _gradients(grad, x, conv_weight, conv_bias, norm_weight, norm_bias, eps)


def _gradients(grad, x, conv_weight, conv_bias, norm_weight, norm_bias, eps):
    """The backward kernel call behind both the custom op and the eager path."""
    out_dtypes = (x.dtype, conv_weight.dtype, conv_bias.dtype, norm_weight.dtype, norm_bias.dtype)
    if x.dtype == torch.float64:
        grads = _backward_torch(grad, x, conv_weight, conv_bias, norm_weight, norm_bias, eps, torch.float64)
        return tuple(g.to(dt) for g, dt in zip(grads, out_dtypes, strict=True))
    c = x.shape[-1]
    grads = (
        torch.empty(x.shape, dtype=torch.float32),
        torch.empty((c, 1, KERNEL), dtype=torch.float32),
        torch.empty(c, dtype=torch.float32),
        torch.empty(c, dtype=torch.float32),
        torch.empty(c, dtype=torch.float32),
    )
    _cpu_common.kernels().dwconv_layernorm_backward(
        _f32(grad),
        _f32(x),
        _f32(conv_weight),
        _f32(conv_bias),
        _f32(norm_weight),
        eps,
        *(g.numpy() for g in grads),
    )
    return tuple(g if g.dtype == dt else g.to(dt) for g, dt in zip(grads, out_dtypes, strict=True))


@dwconv_layernorm_backward_op.register_fake
def _(grad, x, conv_weight, conv_bias, norm_weight, norm_bias, eps):
    return tuple(torch.empty_like(t) for t in (x, conv_weight, conv_bias, norm_weight, norm_bias))


def _backward(ctx, grad):
    return _input_grads(ctx, grad, dwconv_layernorm_backward_op)


dwconv_layernorm_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerDwconvLayerNorm(torch.autograd.Function):
    """The custom op's kernels and saved tensors without its dispatch (why: the bottleneck's
    ``_EagerBottleneck``)."""

    @staticmethod
    def forward(ctx, x, conv_weight, conv_bias, norm_weight, norm_bias, eps):
        _save(ctx, x, conv_weight, conv_bias, norm_weight, norm_bias, eps)
        return _forward(x, conv_weight, conv_bias, norm_weight, norm_bias, eps)

    @staticmethod
    @once_differentiable  # the C++ gradients are not themselves differentiable: a clear error, not zeros
    def backward(ctx, grad):
        return _input_grads(ctx, grad, _gradients)


def dwconv_layernorm(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``LayerNorm(dwconv7(x))`` for channels-last ``x`` ``[B, T, C]`` on the fused C++ kernel."""
    check_args(x, conv_weight, conv_bias)
    params = (x, conv_weight, conv_bias, norm_weight, norm_bias)
    if (
        _cpu_common.TRAIN_COMPOSITION
        and all(p.dtype == torch.float32 for p in params)
        and torch.is_grad_enabled()
        and any(p.requires_grad for p in params)
    ):
        c = x.shape[-1]
        y = F.conv1d(x.transpose(1, 2), conv_weight, conv_bias, padding=KERNEL // 2, groups=c)
        return F.layer_norm(y.transpose(1, 2), (c,), norm_weight, norm_bias, eps)
    if torch.compiler.is_compiling():  # the custom op: an opaque node with a fake for tracing
        return dwconv_layernorm_op(x, conv_weight, conv_bias, norm_weight, norm_bias, float(eps))
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return _EagerDwconvLayerNorm.apply(x, conv_weight, conv_bias, norm_weight, norm_bias, float(eps))
    return _forward(x, conv_weight, conv_bias, norm_weight, norm_bias, float(eps))
