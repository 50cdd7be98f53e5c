"""dwconv + LayerNorm on the C++ backend (custom op ``convnext_fast::dwconv_layernorm_cpu`` under
torch.compile, an autograd.Function over the same kernels in eager mode) against the float64 reference:
forward and backward, odd T, B=1, C not a multiple of 8, non-contiguous input, bf16, gradcheck of the
hand-written backward, the custom op's autograd against the eager path, opcheck, and argument errors."""

from __future__ import annotations

import pytest
import torch

from convnext_fast._ext import _C
from convnext_fast.ops import _cpu_common
from convnext_fast.ops.dwconv_layernorm import cpu
from convnext_fast.ops.dwconv_layernorm.reference import dwconv_layernorm as reference
from tests.helpers import TOLERANCE, assert_close
from tests.ops.conftest import dwconv_layernorm_inputs as make_inputs

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")

SHAPES = [(1, 16, 20), (2, 37, 40), (3, 9, 100)]


@pytest.mark.parametrize("train_composition", [True, False], ids=["composition", "kernels"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-T{t}-C{c}" for b, t, c in SHAPES])
def test_matches_reference_forward_and_backward(
    shape, train_composition, monkeypatch, check_op_against_reference
):
    # both training paths: the torch composition (opt-in) and the C++ kernels' own fp32 backward
    monkeypatch.setattr(_cpu_common, "TRAIN_COMPOSITION", train_composition)
    check_op_against_reference(
        "dwconv_layernorm",
        cpu.dwconv_layernorm,
        reference,
        make_inputs(*shape),
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def test_custom_op_autograd_matches_the_eager_path():
    """torch.compile runs the custom op and its registered autograd; eager mode the autograd.Function:
    same kernels, so the same outputs and gradients to the bit."""
    x, *params = make_inputs(2, 13, 20)
    grad = torch.randn(2, 13, 20)
    results = []
    for run in (cpu.dwconv_layernorm, lambda *a: cpu.dwconv_layernorm_op(*a, 1e-6)):
        leaves = [t.clone().requires_grad_() for t in (x, *params)]
        out = run(*leaves)
        out.backward(grad)
        results.append([out.detach(), *(t.grad for t in leaves)])
    for eager, op in zip(*results, strict=True):
        assert torch.equal(eager, op)


def test_non_contiguous_input_and_bf16():
    x_bct, *params = make_inputs(2, 40, 21)
    x = x_bct.transpose(1, 2)  # a [B, T, C] view of a [B, C, T] tensor (here [2, 21, 40])
    params[0] = torch.randn(40, 1, 7) / 2
    params[1:] = [torch.randn(40) for _ in range(3)]
    ref = reference(x.double(), *(p.double() for p in params))
    assert_close("non-contiguous fp32", ref, cpu.dwconv_layernorm(x, *params), TOLERANCE[torch.float32])
    out = cpu.dwconv_layernorm(x.bfloat16(), *params)
    assert out.dtype == torch.bfloat16
    assert_close("bf16", ref, out, TOLERANCE[torch.bfloat16])


def test_gradcheck_float64():
    inputs = [t.double().requires_grad_() for t in make_inputs(2, 6, 5)]
    assert torch.autograd.gradcheck(cpu.dwconv_layernorm, inputs, fast_mode=True)


def test_opcheck():
    torch.library.opcheck(cpu.dwconv_layernorm_op, (*make_inputs(2, 11, 12), 1e-6))
    x, w, cb, nw, nb = make_inputs(2, 11, 12)
    torch.library.opcheck(cpu.dwconv_layernorm_backward_op, (torch.randn_like(x), x, w, cb, nw, nb, 1e-6))


def test_nan_input_propagates():
    x, *params = make_inputs(1, 30, 8)
    x[0, 20, 1] = float("nan")
    out = cpu.dwconv_layernorm(x, *params)
    assert out[0, 17:24].isnan().all() and out[0, :17].isfinite().all() and out[0, 24:].isfinite().all()


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda a: a.__setitem__(0, a[0][0]), ValueError, r"x must be a \[B, T, C\] tensor"),
        (lambda a: a.__setitem__(0, a[0].long()), TypeError, "x must be a floating-point tensor"),
        (lambda a: a.__setitem__(1, a[1][:-1]), ValueError, r"conv_weight must have shape \[8, 1, 7\]"),
        (lambda a: a.__setitem__(0, a[0].to("meta")), ValueError, "x must be on the CPU"),
        (lambda a: a.__setitem__(2, a[2][:-1]), ValueError, "conv_bias must have shape"),
    ],
    ids=["rank", "dtype", "channels", "device", "bias"],
)
def test_bad_inputs_name_the_argument(change, error, match):
    args = make_inputs(2, 5, 8)
    change(args)
    with pytest.raises(error, match=match):
        cpu.dwconv_layernorm(*args)
