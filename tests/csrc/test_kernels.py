"""The C++ kernels called straight from numpy (no torch), against float64 numpy oracles, so a failure
points at the kernel rather than the torch glue. Outputs are NaN-poisoned before every call."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convnext_fast._ext import _C

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")

SHAPES = [(1, 16, 20), (2, 37, 40), (3, 5, 100)]  # (B, T, C): B=1, odd T, C not a multiple of 8
IDS = [f"B{b}-T{t}-C{c}" for b, t, c in SHAPES]
erf = np.vectorize(math.erf)


def poisoned(*shape: int) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float32)


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    assert np.isfinite(out).all(), "output has NaN/Inf (unwritten elements?)"
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def layernorm64(y: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    mean = y.mean(-1, keepdims=True)
    var = ((y - mean) ** 2).mean(-1, keepdims=True)
    return (y - mean) / np.sqrt(var + eps) * w + b


def dwconv_layernorm64(x, w, cb, nw, nb):
    _, t, _ = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (3, 3), (0, 0)))
    y = cb + sum(padded[:, k : k + t, :] * w[:, 0, k] for k in range(7))
    return layernorm64(y, nw, nb)


def gelu64(z):
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def bottleneck64(x, n, w1, b1, w2, b2, gamma, scale):
    hidden = n.astype(np.float64) @ w1.T + b1
    y = x + scale[:, None, None] * gamma * (gelu64(hidden) @ w2.T + b2)
    return y, hidden


def bottleneck_inputs(rng, b, t, c):
    h = 4 * c
    return [
        f32(rng.standard_normal((b, t, c))),
        f32(rng.standard_normal((b, t, c))),
        f32(rng.standard_normal((h, c)) / math.sqrt(c)),
        f32(rng.standard_normal(h)),
        f32(rng.standard_normal((c, h)) / math.sqrt(h)),
        f32(rng.standard_normal(c)),
        f32(rng.standard_normal(c)),
    ]


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_dwconv_layernorm(shape, isa, rng):
    b, t, c = shape
    x = f32(rng.standard_normal(shape))
    w, cb, nw, nb = (f32(rng.standard_normal(s)) for s in ((c, 1, 7), c, c, c))
    out = poisoned(b, t, c)
    _C.dwconv_layernorm(x, w, cb, nw, nb, 1e-6, out)
    assert rel_err(dwconv_layernorm64(x, w, cb, nw, nb), out) <= 1e-5


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [*SHAPES, (2, 64, 96), (1, 8, 384)], ids=[*IDS, "B2-T64-C96", "B1-T8-C384"])
def test_bottleneck_with_drop_path_and_hidden(shape, threads, isa, rng):
    b, t, c = shape
    args = bottleneck_inputs(rng, b, t, c)
    scale = f32(np.where(rng.random(b) < 0.5, 0.0, 1.0 / 0.8))
    out, hidden = poisoned(b, t, c), poisoned(b, t, 4 * c)
    before = _C.get_num_threads()
    try:
        _C.set_num_threads(threads)
        _C.bottleneck(*args, scale, out, hidden)
    finally:
        _C.set_num_threads(before)
    ref, ref_hidden = bottleneck64(*args, scale)
    assert rel_err(ref, out) <= 1e-5
    assert rel_err(ref_hidden, hidden) <= 1e-5


def test_bottleneck_in_place_and_many_row_blocks(isa, rng):
    """Rows beyond one cache block (parallel over blocks) and out aliasing x, as the packed model runs it."""
    b, t, c = 4, 300, 24
    args = bottleneck_inputs(rng, b, t, c)
    ref, _ = bottleneck64(*args, np.ones(b))
    x = args[0]
    _C.bottleneck(*args, None, x)
    assert rel_err(ref, x) <= 1e-5


def test_gelu_matches_erf_across_the_range(isa):
    z = np.linspace(-12.0, 12.0, 20001)
    out = poisoned(z.size)
    _C.gelu(f32(z), out)
    ref = gelu64(f32(z).astype(np.float64))
    assert np.abs(out - ref).max() <= 2e-6  # a few float ulps at |z| ≈ 12
    assert rel_err(ref, out) <= 1e-6


def test_linear_and_layernorm(rng):
    x = f32(rng.standard_normal((70, 33)))
    w, bias = f32(rng.standard_normal((50, 33))), f32(rng.standard_normal(50))
    out = poisoned(70, 50)
    _C.linear(x, w, bias, out)
    assert rel_err(x.astype(np.float64) @ w.T + bias, out) <= 1e-5
    nw, nb = f32(rng.standard_normal(33)), f32(rng.standard_normal(33))
    out = poisoned(70, 33)
    _C.layernorm(x, nw, nb, 1e-6, out)
    assert rel_err(layernorm64(x.astype(np.float64), nw, nb), out) <= 1e-5


def test_nan_input_propagates_to_its_receptive_field(rng):
    b, t, c = 2, 20, 12
    x = f32(rng.standard_normal((b, t, c)))
    x[1, 10, 3] = np.nan
    w, cb, nw, nb = (f32(rng.standard_normal(s)) for s in ((c, 1, 7), c, c, c))
    out = poisoned(b, t, c)
    _C.dwconv_layernorm(x, w, cb, nw, nb, 1e-6, out)
    assert np.isnan(out[1, 7:14]).all()  # the NaN reaches rows t-3..t+3 of its own sample
    assert np.isfinite(out[0]).all() and np.isfinite(out[1, :7]).all() and np.isfinite(out[1, 14:]).all()
    args = bottleneck_inputs(rng, b, t, c)
    args[1][0, 4, 0] = np.nan
    y = poisoned(b, t, c)
    _C.bottleneck(*args, None, y)
    assert np.isnan(y[0, 4]).all() and np.isfinite(np.delete(y.reshape(-1, c), 4, axis=0)).all()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda a: a.update(x=a["x"].astype(np.float64)), TypeError, "x must be float32"),
        (lambda a: a.update(x=a["x"][0]), ValueError, r"x must have shape \[\*, \*, \*\]"),
        (lambda a: a.update(conv_weight=a["conv_weight"][:-1]), ValueError, "conv_weight must have shape"),
        (lambda a: a.update(norm_bias=[0.0] * 12), TypeError, "norm_bias must be a numpy float32 array"),
        (lambda a: a.update(x=np.asfortranarray(a["x"])), ValueError, "x must be C-contiguous"),
        (lambda a: a["out"].setflags(write=False), ValueError, "out must be writable"),
        (lambda a: a.update(out=a["out"][:, :-1]), ValueError, "out must have shape"),
    ],
    ids=["dtype", "rank", "channels", "not-array", "fortran", "read-only-out", "out-shape"],
)
def test_bad_arguments_name_the_argument(change, error, match, rng):
    c = 12
    args = {
        "x": f32(rng.standard_normal((2, 9, c))),
        "conv_weight": f32(rng.standard_normal((c, 1, 7))),
        "conv_bias": f32(rng.standard_normal(c)),
        "norm_weight": f32(rng.standard_normal(c)),
        "norm_bias": f32(rng.standard_normal(c)),
        "eps": 1e-6,
        "out": poisoned(2, 9, c),
    }
    change(args)
    with pytest.raises(error, match=match):
        _C.dwconv_layernorm(**args)


def test_bottleneck_rejects_mismatched_weights(rng):
    x, n, w1, b1, w2, b2, gamma = bottleneck_inputs(rng, 1, 4, 8)
    with pytest.raises(ValueError, match="fc2_weight must have shape"):
        _C.bottleneck(x, n, w1, b1, w2[:, :-1], b2, gamma, None, poisoned(1, 4, 8))
    with pytest.raises(ValueError, match="sample_scale must have shape"):
        _C.bottleneck(x, n, w1, b1, w2, b2, gamma, f32(np.ones(2)), poisoned(1, 4, 8))
