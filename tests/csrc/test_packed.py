"""The inference session's packed pieces straight from numpy: ``PackedLinear`` (the panel GEMM of
csrc/kernels/packed_gemm.cpp, its scalar, AVX2 and AVX-512 kernels through the ``isa`` fixture of
conftest.py and its bf16 kernels through ``bf16_isa``, every row-tile height and partial last panel) and
``PackedBlock`` (one block as the session runs it), against float64 numpy oracles with NaN-poisoned
outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convnext_fast._ext import _C
from tests.csrc.test_kernels import bottleneck64, dwconv_layernorm64, f32, poisoned, rel_err

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = _C.get_num_threads()
    _C.set_num_threads(request.param)
    yield request.param
    _C.set_num_threads(before)


# rows: 1…7 hit every AVX2 (and scalar: 1…4) tile height and the 4+4 split of 8; 11, 12 and 13 the AVX-512 tile heights
# and their 7+6 split; 64 mixed tiles; 200 the row split over threads. (n, k): n not a multiple of 16
# (partial last panel, masked bias load and store), one panel (n3), a partial second panel in a two-panel
# AVX-512 step (n20), an odd panel count (n100: the last step has one panel), k odd.
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 64, 200])
@pytest.mark.parametrize(
    ("n", "k"), [(3, 40), (20, 33), (100, 97), (1536, 384)], ids=["n3", "n20", "n100", "n1536"]
)
def test_packed_linear_matches_float64(rows, n, k, threads, isa, rng):
    w, b = f32(rng.standard_normal((n, k)) / math.sqrt(k)), f32(rng.standard_normal(n))
    x = f32(rng.standard_normal((rows, k)))
    lin = _C.PackedLinear(w, b)
    out = poisoned(rows, n)
    lin.forward(x, out)
    assert rel_err(x.astype(np.float64) @ w.T.astype(np.float64) + b, out) <= 1e-5


def bf16_rounded(a: np.ndarray) -> np.ndarray:
    """float32 → bf16 → float32, round to nearest even (finite inputs), independently of the C++ rounding."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


# bf16 weights: every path rounds x and w to bf16 and sums their exact products in fp32, so the oracle is
# float64 over the bf16-rounded operands and the tolerance is fp32's summation error, not bf16's.
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 11, 13, 64])
@pytest.mark.parametrize(
    ("n", "k"), [(3, 40), (20, 33), (100, 97), (400, 7), (96, 768)], ids=["n3", "n20", "n100", "k7", "k768"]
)
def test_packed_linear_bf16_matches_float64_of_bf16_operands(rows, n, k, threads, bf16_isa, rng):
    w, b = f32(rng.standard_normal((n, k)) / math.sqrt(k)), f32(rng.standard_normal(n))
    x = f32(rng.standard_normal((rows, k)))
    out = poisoned(rows, n)
    _C.PackedLinear(w, b, bf16=True).forward(x, out)
    want = bf16_rounded(x).astype(np.float64) @ bf16_rounded(w).T.astype(np.float64) + b
    assert rel_err(want, out) <= 1e-5
    # and not within the same bound of the fp32 product: the rounding happened (bf16 moves it by ~1e-3)
    assert rel_err(x.astype(np.float64) @ w.T.astype(np.float64) + b, out) > 1e-5


def test_packed_linear_bf16_nan_and_inf_stay_in_their_rows(bf16_isa, rng):
    w, b = f32(rng.standard_normal((40, 24))), f32(rng.standard_normal(40))
    x = f32(rng.standard_normal((9, 24)))
    x[4, 7] = np.nan  # lane 7 of the first 8: the vector rounding
    x[6, 17] = np.inf  # the scalar tail of k = 24 is empty; 17 is in the third 8-lane group
    out = poisoned(9, 40)
    _C.PackedLinear(w, b, bf16=True).forward(x, out)
    assert np.isnan(out[4]).all()
    assert np.isinf(out[6]).all() and (np.sign(out[6]) == np.sign(w[:, 17])).all()
    assert np.isfinite(np.delete(out, [4, 6], axis=0)).all()


def test_packed_linear_writes_only_its_columns(isa, rng):
    """A partial last panel must not write past column n: the row after each output row stays intact."""
    w, b = f32(rng.standard_normal((20, 8))), f32(rng.standard_normal(20))
    x = f32(rng.standard_normal((5, 8)))
    buf = poisoned(6 * 20)
    buf[100:] = 7.0
    _C.PackedLinear(w, b).forward(x, buf[:100].reshape(5, 20))
    assert (buf[100:] == 7.0).all()
    assert rel_err(x.astype(np.float64) @ w.T + b, buf[:100].reshape(5, 20)) <= 1e-5


def test_packed_linear_nan_stays_in_its_row(isa, rng):
    w, b = f32(rng.standard_normal((40, 24))), f32(rng.standard_normal(40))
    x = f32(rng.standard_normal((9, 24)))
    x[4, 7] = np.nan
    out = poisoned(9, 40)
    _C.PackedLinear(w, b).forward(x, out)
    assert np.isnan(out[4]).all() and np.isfinite(np.delete(out, 4, axis=0)).all()


def test_packed_linear_bad_arguments(rng):
    with pytest.raises(ValueError, match="bias"):
        _C.PackedLinear(f32(rng.standard_normal((4, 3))), f32(rng.standard_normal(5)))
    lin = _C.PackedLinear(f32(rng.standard_normal((4, 3))), f32(rng.standard_normal(4)))
    with pytest.raises(ValueError, match="x"):
        lin.forward(f32(rng.standard_normal((2, 5))), poisoned(2, 4))
    with pytest.raises(ValueError, match="out"):
        lin.forward(f32(rng.standard_normal((2, 3))), poisoned(2, 5))


def block_weights(rng, c: int) -> dict[str, np.ndarray]:
    h = 4 * c
    return {
        "conv_dw.weight": f32(rng.standard_normal((c, 1, 7)) / math.sqrt(7)),
        "conv_dw.bias": f32(rng.standard_normal(c)),
        "norm.weight": f32(1 + 0.3 * rng.standard_normal(c)),
        "norm.bias": f32(0.3 * rng.standard_normal(c)),
        "mlp.fc1.weight": f32(rng.standard_normal((h, c)) / math.sqrt(c)),
        "mlp.fc1.bias": f32(rng.standard_normal(h)),
        "mlp.fc2.weight": f32(rng.standard_normal((c, h)) / math.sqrt(h)),
        "mlp.fc2.bias": f32(rng.standard_normal(c)),
        "gamma": f32(rng.standard_normal(c)),
    }


# c=13: hidden width 52 leaves a 4-element tail after the GELU pass's 8-lane loop.
@pytest.mark.parametrize(("b", "t", "c"), [(1, 16, 384), (1, 9, 20), (3, 37, 40), (2, 130, 100), (2, 11, 13)])
def test_packed_block_matches_float64(b, t, c, threads, isa, rng):
    wts = block_weights(rng, c)
    x = f32(rng.standard_normal((b, t, c)))
    n = dwconv_layernorm64(
        x, wts["conv_dw.weight"], wts["conv_dw.bias"], wts["norm.weight"], wts["norm.bias"]
    )
    ref, _ = bottleneck64(
        x.astype(np.float64),
        n,
        wts["mlp.fc1.weight"],
        wts["mlp.fc1.bias"],
        wts["mlp.fc2.weight"],
        wts["mlp.fc2.bias"],
        wts["gamma"],
        np.ones(b),
    )
    out = poisoned(b, t, c)
    _C.PackedBlock(c, 1e-6, wts).forward(x, out)
    assert rel_err(ref, out) <= 1e-5


def test_packed_block_names_missing_and_misshaped_weights(rng):
    wts = block_weights(rng, 8)
    del wts["gamma"]
    with pytest.raises(KeyError, match="gamma"):
        _C.PackedBlock(8, 1e-6, wts)
    wts = block_weights(rng, 8)
    wts["mlp.fc1.weight"] = wts["mlp.fc1.weight"][:, :4].copy()
    with pytest.raises(ValueError, match=r"mlp\.fc1\.weight"):
        _C.PackedBlock(8, 1e-6, wts)
    x = f32(rng.standard_normal((1, 5, 8)))
    with pytest.raises(ValueError, match="share memory"):
        _C.PackedBlock(8, 1e-6, block_weights(rng, 8)).forward(x, x)
