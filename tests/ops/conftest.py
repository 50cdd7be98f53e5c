"""Run the Triton kernels in the interpreter on CPU tensors when there is no GPU.

``@triton.jit`` decides at decoration time whether a kernel compiles or interprets, so TRITON_INTERPRET
must be in the environment before triton itself and ``convnext_fast.ops.*.triton`` are imported (the
dispatcher imports the latter lazily). On a CUDA machine the kernels run compiled instead.

Also the pieces every backend's op tests share: random inputs per op, output poisoning, and the
forward + backward comparison against a float64 reference (tests/gpu imports them too).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

# At import, not in a fixture: triton's own standard library (tl.sum, ...) is @triton.jit-decorated when
# triton is first imported, and must be interpreted too.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def triton_interpreter_usable() -> bool:
    """Whether this process can interpret Triton kernels: false when something (torch._dynamo does)
    imported triton before TRITON_INTERPRET was set, as in a whole-suite run; the Triton tests then run
    in a fresh process instead (tests/ops/test_model_triton.py::test_triton_tests_in_a_fresh_process)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.standard.sum, InterpretedFunction)


@pytest.fixture
def triton_device() -> torch.device:
    """Where the Triton tests put their tensors: the GPU when there is one, else the CPU (interpreter)."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not triton_interpreter_usable():
        pytest.skip(
            "triton was imported before TRITON_INTERPRET=1 could be set; these run in a fresh process"
        )
    return torch.device("cpu")


@pytest.fixture
def poison_empty(monkeypatch):
    """Make ``torch.empty``/``empty_like`` return NaN-filled (floats) or -1-filled (ints) tensors while a
    test runs, so any element a kernel forgets to write shows up as NaN instead of stale memory."""
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(t: torch.Tensor) -> torch.Tensor:
        return t.fill_(float("nan") if t.is_floating_point() else -1)

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poisoned(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poisoned(empty_like(*a, **k)))


def compare_with_reference(name, op, reference, inputs, *extra, dtype, device, tolerance=None):
    """Run ``op`` forward and backward on ``inputs`` cast to ``dtype`` on ``device`` and ``reference`` in
    float64 on the same values; compare the output and the gradient of every input (relative error ≤
    ``tolerance``, default the project's per-dtype TOLERANCE)."""
    from tests.helpers import TOLERANCE, assert_close

    ratio = tolerance or TOLERANCE[dtype]
    low = [t.to(device=device, dtype=dtype).requires_grad_() for t in inputs]
    exact = [t.detach().to(device="cpu", dtype=torch.float64).requires_grad_() for t in low]
    out = op(*low, *extra)
    ref = reference(*exact, *[e.double().cpu() if isinstance(e, torch.Tensor) else e for e in extra])
    assert out.dtype == dtype and out.device.type == device.type
    assert_close(f"{name} forward", ref, out, ratio)
    grad = torch.randn(out.shape, dtype=torch.float64)
    ref_grads = torch.autograd.grad(ref, exact, grad)
    grads = torch.autograd.grad(out, low, grad.to(device=device, dtype=dtype))
    for i, (ref_g, g) in enumerate(zip(ref_grads, grads, strict=True)):
        assert g.dtype == dtype
        assert_close(f"{name} grad of input {i}", ref_g, g, ratio)
    return grads


@pytest.fixture
def check_op_against_reference(poison_empty):
    """:func:`compare_with_reference` with every ``torch.empty`` output poisoned first."""
    return compare_with_reference


def dwconv_layernorm_inputs(b: int, t: int, c: int, k: int = 7) -> list[torch.Tensor]:
    """x, conv weight/bias, LayerNorm weight/bias; LN weights away from 1/0 so that a swapped or dropped
    gradient term cannot hide."""
    return [torch.randn(b, t, c), torch.randn(c, 1, k) * 0.3, torch.randn(c), torch.randn(c), torch.randn(c)]


def bottleneck_inputs(b: int, t: int, c: int) -> list[torch.Tensor]:
    """x, n, fc1 weight/bias, fc2 weight/bias, gamma; weights scaled so the branch is O(1), as large as the
    residual: an error in it cannot hide."""
    h = 4 * c
    return [
        torch.randn(b, t, c),
        torch.randn(b, t, c),
        torch.randn(h, c) / c**0.5,
        torch.randn(h),
        torch.randn(c, h) / h**0.5,
        torch.randn(c),
        torch.randn(c),
    ]


def drop_path_scale(b: int) -> torch.Tensor:
    """Drop path's per-sample factor: 0 (dropped) or 1/keep; at least one of each when b ≥ 2."""
    keep = torch.rand(b) < 0.5
    keep[0], keep[-1] = True, b == 1
    return keep.float() / 0.7


@pytest.fixture
def op_inputs() -> SimpleNamespace:
    """Random inputs for every fused op, shared by the backends' tests (fresh per call)."""
    return SimpleNamespace(
        dwconv_layernorm=dwconv_layernorm_inputs,
        bottleneck=bottleneck_inputs,
        drop_path_scale=drop_path_scale,
    )
