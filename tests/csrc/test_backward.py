"""The C++ training backward kernels (``_C.dwconv_layernorm_backward``, ``_C.bottleneck_backward``) called
straight from numpy with NaN-poisoned outputs, against float64 autograd through the reference ops:
B=1, odd T, C = 20, 25 (a GELU' tail that is not a multiple of 8 lanes), 40, 100, with and without drop path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convnext_fast._ext import _C
from convnext_fast.ops.bottleneck.reference import bottleneck as bottleneck_ref
from convnext_fast.ops.dwconv_layernorm.reference import dwconv_layernorm as dwconv_layernorm_ref
from tests.csrc.test_kernels import f32, poisoned, rel_err

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")

SHAPES = [(1, 16, 20), (2, 37, 40), (3, 5, 100), (1, 9, 25), (4, 64, 40)]  # (B, T, C)
IDS = [f"B{b}-T{t}-C{c}" for b, t, c in SHAPES]
EPS = 1e-6


def grads64(fn, inputs: list[np.ndarray], grad: np.ndarray, extra=()) -> list[np.ndarray]:
    leaves = [torch.from_numpy(a).double().requires_grad_() for a in inputs]
    out = fn(*leaves, *extra)
    return [g.numpy() for g in torch.autograd.grad(out, leaves, torch.from_numpy(grad).double())]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_dwconv_layernorm_backward_matches_float64(shape, isa):
    b, t, c = shape
    rng = np.random.default_rng(b * 1000 + t + c)
    x = f32(rng.standard_normal((b, t, c)))
    w, cb = f32(rng.standard_normal((c, 1, 7)) * 0.3), f32(rng.standard_normal(c))
    nw, nb = f32(rng.standard_normal(c)), f32(rng.standard_normal(c))
    grad = f32(rng.standard_normal((b, t, c)))
    outs = [poisoned(b, t, c), poisoned(c, 1, 7), poisoned(c), poisoned(c), poisoned(c)]
    _C.dwconv_layernorm_backward(grad, x, w, cb, nw, EPS, *outs)
    refs = grads64(dwconv_layernorm_ref, [x, w, cb, nw, nb], grad, (EPS,))
    for name, ref, out in zip(("dx", "dconv_w", "dconv_b", "dnorm_w", "dnorm_b"), refs, outs, strict=True):
        assert rel_err(ref, out) <= 1e-5, name


@pytest.mark.parametrize("with_scale", [False, True], ids=["no-drop-path", "drop-path"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_bottleneck_backward_matches_float64(shape, with_scale, isa):
    b, t, c = shape
    h = 4 * c
    rng = np.random.default_rng(b * 1000 + t + c + with_scale)
    x, n = f32(rng.standard_normal((b, t, c))), f32(rng.standard_normal((b, t, c)))
    w1, b1 = f32(rng.standard_normal((h, c)) / c**0.5), f32(rng.standard_normal(h))
    w2, b2 = f32(rng.standard_normal((c, h)) / h**0.5), f32(rng.standard_normal(c))
    gamma = f32(rng.standard_normal(c))
    scale = f32(np.where(np.arange(b) % 2 == 1, 0.0, 1 / 0.7)) if with_scale else None
    hidden = f32(n.astype(np.float64) @ w1.T.astype(np.float64) + b1)  # what the forward saves
    grad = f32(rng.standard_normal((b, t, c)))
    outs = [poisoned(b, t, c), poisoned(h, c), poisoned(h), poisoned(c, h), poisoned(c), poisoned(c)]
    _C.bottleneck_backward(grad, n, hidden, w1, w2, b2, gamma, scale, *outs)
    extra = () if scale is None else (torch.from_numpy(scale).double(),)
    refs = grads64(bottleneck_ref, [x, n, w1, b1, w2, b2, gamma], grad, extra)[1:]  # dx is grad itself
    names = ("dn", "dfc1_weight", "dfc1_bias", "dfc2_weight", "dfc2_bias", "dgamma")
    for name, ref, out in zip(names, refs, outs, strict=True):
        assert rel_err(ref, out) <= 1e-5, name


def test_gelu_backward_large_and_small_preactivations(isa):
    # |z| up to 12: the Gaussian term underflows and erf saturates; GELU' must go to exactly 0 / 1
    b, t, c = 1, 8, 20
    h = 4 * c
    rng = np.random.default_rng(7)
    n = f32(rng.standard_normal((b, t, c)))
    w1 = f32(rng.standard_normal((h, c)))
    w2, b2, gamma = f32(np.eye(c, h)), f32(np.zeros(c)), f32(np.ones(c))
    hidden = f32(np.linspace(-12, 12, t * h).reshape(b, t, h))
    grad = f32(rng.standard_normal((b, t, c)))
    outs = [poisoned(b, t, c), poisoned(h, c), poisoned(h), poisoned(c, h), poisoned(c), poisoned(c)]
    _C.bottleneck_backward(grad, n, hidden, w1, w2, b2, gamma, None, *outs)
    z = torch.from_numpy(hidden).double().reshape(-1, h)
    da = torch.from_numpy(grad).double().reshape(-1, c) @ torch.from_numpy(w2).double()
    dz = torch.ops.aten.gelu_backward(da, z)
    assert rel_err(dz.sum(0).numpy(), outs[2]) <= 1e-5


def test_backward_argument_errors_name_the_argument():
    x = f32(np.random.default_rng(0).standard_normal((1, 8, 20)))
    w, v = f32(np.ones((20, 1, 7))), f32(np.ones(20))
    outs = [poisoned(1, 8, 20), poisoned(20, 1, 7), poisoned(20), poisoned(20), poisoned(20)]
    with pytest.raises(ValueError, match="grad"):
        _C.dwconv_layernorm_backward(x[:, :4], x, w, v, v, EPS, *outs)
    with pytest.raises(ValueError, match="dx must not share memory"):
        _C.dwconv_layernorm_backward(x, x, w, v, v, EPS, x, *outs[1:])
    with pytest.raises(ValueError, match="fc2_weight"):
        _C.bottleneck_backward(
            x,
            x,
            poisoned(1, 8, 80),
            f32(np.ones((80, 20))),
            f32(np.ones((20, 79))),
            v,
            v,
            None,
            x.copy(),
            poisoned(80, 20),
            poisoned(80),
            poisoned(20, 80),
            v.copy(),
            v.copy(),
        )
