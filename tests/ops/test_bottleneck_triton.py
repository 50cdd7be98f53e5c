"""GELU inverted bottleneck Triton kernels against the float64 reference: fp32 and fp16, forward and
backward, with and without drop path's per-sample scale, ragged M and C not a power of two. Without CUDA
they run in the Triton interpreter (tests/ops/conftest.py sets TRITON_INTERPRET=1 first)."""

from __future__ import annotations

import pytest
import torch

from convnext_fast import ops
from convnext_fast.ops.bottleneck.reference import bottleneck as reference
from tests.ops.conftest import bottleneck_inputs as make_inputs
from tests.ops.conftest import drop_path_scale

SHAPES = [(2, 37, 40), (1, 70, 100), (3, 5, 8)]  # (B, T, C): M = 74, 70, 15 rows, none a tile multiple


@pytest.fixture(params=["default", "two-gemm"])
def forward_design(request, monkeypatch) -> str:
    """Run the forward through the design the op picks (the fused-MLP kernel for fp16 at C ≥ 16, two
    GEMMs for fp32 and for C < 16) or force the two-GEMM kernels that wider layers use."""
    from convnext_fast.ops.bottleneck import triton as module

    if request.param == "two-gemm":
        monkeypatch.setattr(module, "use_fused_mlp", lambda m, c, size: False)
    return request.param


@pytest.mark.parametrize("with_scale", [False, True], ids=["no-drop-path", "drop-path"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-T{t}-C{c}" for b, t, c in SHAPES])
def test_matches_reference_forward_and_backward(
    shape, dtype, with_scale, forward_design, triton_device, check_op_against_reference
):
    from convnext_fast.ops.bottleneck.triton import bottleneck

    scale = drop_path_scale(shape[0]).to(triton_device, dtype) if with_scale else None
    check_op_against_reference(
        "bottleneck", bottleneck, reference, make_inputs(*shape), scale, dtype=dtype, device=triton_device
    )


def test_inference_keeps_no_branch_output(forward_design, triton_device, monkeypatch):
    """Under no_grad the forward must not write z (the fc2 output kept only for dγ)."""
    from convnext_fast.ops.bottleneck import triton as module

    saved = []
    real = module.bottleneck_fwd

    def spy(*args):
        out, z = real(*args)
        saved.append(z.numel())
        return out, z

    monkeypatch.setattr(module, "bottleneck_fwd", spy)
    inputs = [t.to(triton_device) for t in make_inputs(1, 8, 16)]
    with torch.no_grad():
        ops.bottleneck(*inputs, backend="triton")
    module.bottleneck(*(t.requires_grad_() for t in inputs))
    assert saved == [0, 8 * 16]


def test_registered_op_passes_opcheck(triton_device):
    """Schema, fake (meta) implementation and autograd registration agree with the real kernels."""
    from convnext_fast.ops.bottleneck import triton  # noqa: F401  (registers the op)

    x, n, w1, b1, w2, b2, gamma = (t.to(triton_device) for t in make_inputs(2, 4, 8))
    torch.library.opcheck(
        torch.ops.convnext_fast.bottleneck_triton.default,
        (
            x,
            n.requires_grad_(),
            w1.requires_grad_(),
            b1,
            w2,
            b2,
            gamma,
            torch.ones(2, device=triton_device),
            True,
        ),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


@pytest.mark.parametrize(
    ("argument", "bad", "message"),
    [
        (1, torch.randn(1, 8, 15), "n must have x's shape"),
        (2, torch.randn(64, 15), "fc1_weight must be"),
        (4, torch.randn(16, 63), "fc2_weight must be"),
        (6, torch.randn(15), "gamma must be"),
        (7, torch.randn(2), "sample_scale must be"),
    ],
)
def test_wrong_shapes_name_the_argument(argument, bad, message, triton_device):
    from convnext_fast.ops.bottleneck.triton import bottleneck

    inputs = [*make_inputs(1, 8, 16), None]
    inputs[argument] = bad
    with pytest.raises(ValueError, match=message):
        bottleneck(*(None if t is None else t.to(triton_device) for t in inputs))
