"""GELU inverted bottleneck on the C++ backend (custom op ``convnext_fast::bottleneck_cpu`` under
torch.compile, an autograd.Function over the same kernels in eager mode) against the float64 reference:
forward and backward with and without drop path, B=1, odd T, C not a multiple of 8, non-contiguous
inputs, bf16, gradcheck of the hand-written backward, the custom op's autograd against the eager path,
opcheck, and argument errors."""

from __future__ import annotations

import pytest
import torch

from convnext_fast._ext import _C
from convnext_fast.ops import _cpu_common
from convnext_fast.ops.bottleneck import cpu
from convnext_fast.ops.bottleneck.reference import bottleneck as reference
from tests.helpers import TOLERANCE, assert_close
from tests.ops.conftest import bottleneck_inputs as make_inputs
from tests.ops.conftest import drop_path_scale

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")

SHAPES = [(1, 16, 20), (2, 37, 40), (3, 9, 100)]


@pytest.mark.parametrize("with_scale", [False, True], ids=["no-drop-path", "drop-path"])
@pytest.mark.parametrize("train_composition", [True, False], ids=["composition", "kernels"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-T{t}-C{c}" for b, t, c in SHAPES])
def test_matches_reference_forward_and_backward(
    shape, with_scale, train_composition, monkeypatch, check_op_against_reference
):
    # both training paths: the torch composition (opt-in) and the C++ kernels' own fp32 backward
    monkeypatch.setattr(_cpu_common, "TRAIN_COMPOSITION", train_composition)
    extra = (drop_path_scale(shape[0]),) if with_scale else ()
    check_op_against_reference(
        "bottleneck",
        cpu.bottleneck,
        reference,
        make_inputs(*shape),
        *extra,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def test_inference_mode_skips_the_hidden_buffer_and_matches():
    args = make_inputs(2, 13, 24)
    with torch.no_grad():
        out = cpu.bottleneck(*args)
        _, hidden = cpu.bottleneck_op(*args, None, False)
    assert hidden.numel() == 0
    assert_close("no-grad", reference(*(a.double() for a in args)), out, TOLERANCE[torch.float32])


def test_non_contiguous_inputs_and_bf16():
    args = make_inputs(2, 10, 40)
    args[0] = torch.randn(2, 40, 10).transpose(1, 2)
    args[2] = torch.randn(40, 160).t() / 40**0.5  # a transposed weight view
    ref = reference(*(a.double() for a in args))
    assert_close("non-contiguous fp32", ref, cpu.bottleneck(*args), TOLERANCE[torch.float32])
    out = cpu.bottleneck(args[0].bfloat16(), args[1].bfloat16(), *args[2:])
    assert out.dtype == torch.bfloat16
    assert_close("bf16", ref, out, TOLERANCE[torch.bfloat16])


def test_gradcheck_float64():
    inputs = [t.double().requires_grad_() for t in make_inputs(2, 3, 4)]
    scale = drop_path_scale(2).double()
    assert torch.autograd.gradcheck(lambda *a: cpu.bottleneck(*a, scale), inputs, fast_mode=True)


def test_custom_op_autograd_matches_the_eager_path():
    """torch.compile runs the custom op and its registered autograd; eager mode the autograd.Function:
    same kernels and saved tensors, so the same outputs and gradients to the bit."""
    inputs = make_inputs(3, 11, 20)
    scale = drop_path_scale(3)
    grad = torch.randn(3, 11, 20)
    results = []
    for run in (
        lambda a: cpu.bottleneck(*a, scale),
        lambda a: cpu.bottleneck_op(*a, scale, True)[0],
    ):
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = run(leaves)
        out.backward(grad)
        results.append([out.detach(), *(t.grad for t in leaves)])
    for eager, op in zip(*results, strict=True):
        assert torch.equal(eager, op)


def test_opcheck():
    args = make_inputs(2, 5, 8)
    torch.library.opcheck(cpu.bottleneck_op, (*args, None, False))
    torch.library.opcheck(cpu.bottleneck_op, (*[a.requires_grad_() for a in args], drop_path_scale(2), True))


@pytest.mark.parametrize("with_scale", [False, True], ids=["no-drop-path", "drop-path"])
def test_backward_op_opcheck(with_scale):
    x, n, w1, b1, w2, b2, gamma = make_inputs(2, 5, 8)
    hidden = torch.nn.functional.linear(n, w1, b1)
    scale = drop_path_scale(2) if with_scale else None
    torch.library.opcheck(
        cpu.bottleneck_backward_op, (torch.randn_like(x), n, hidden, w1, b1, w2, b2, gamma, scale)
    )


def test_nan_input_propagates():
    args = make_inputs(2, 6, 8)
    args[1][1, 2, 0] = float("nan")
    out = cpu.bottleneck(*args)
    assert out[1, 2].isnan().all()
    out[1, 2] = 0.0
    assert out.isfinite().all()


@pytest.mark.parametrize(
    ("index", "bad", "error", "match"),
    [
        (0, lambda t: t[0], ValueError, r"x must be a \[B, T, C\] tensor"),
        (1, lambda t: t.int(), TypeError, "n must be a floating-point tensor"),
        (1, lambda t: t[:, :-1], ValueError, "n must have the shape of x"),
        (2, lambda t: t[:, :-1], ValueError, r"fc1_weight must have shape \[H, 8\]"),
        (4, lambda t: t[:-1], ValueError, "fc2_weight must have shape"),
        (0, lambda t: t.to("meta"), ValueError, "x must be on the CPU"),
    ],
    ids=["rank", "dtype", "n-shape", "fc1-channels", "fc2-shape", "device"],
)
def test_bad_inputs_name_the_argument(index, bad, error, match):
    args = make_inputs(2, 5, 8)
    args[index] = bad(args[index])
    with pytest.raises(error, match=match):
        cpu.bottleneck(*args)


def test_double_backward_is_a_clear_error():
    """The C++ gradients are not differentiable again: asking for it must fail loudly, not give zeros."""
    leaves = [t.requires_grad_() for t in make_inputs(2, 5, 8)]
    out = cpu.bottleneck(*leaves)
    (grad_x,) = torch.autograd.grad(out.square().sum(), leaves[1], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad_x.sum().backward()
