"""dwconv + LayerNorm Triton kernels against the float64 reference: fp32 and fp16, forward and backward,
ragged shapes (T not a multiple of the block, C not a power of two). Without CUDA they run in the Triton
interpreter (tests/ops/conftest.py sets TRITON_INTERPRET=1 before the kernels are imported)."""

from __future__ import annotations

import pytest
import torch

from convnext_fast import ops
from convnext_fast.ops.dwconv_layernorm.reference import dwconv_layernorm as reference
from tests.ops.conftest import dwconv_layernorm_inputs as make_inputs

SHAPES = [(2, 37, 40), (1, 70, 100), (3, 16, 8)]  # (B, T, C): 37 and 70 leave ragged time tiles


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{b}-T{t}-C{c}" for b, t, c in SHAPES])
def test_matches_reference_forward_and_backward(shape, dtype, triton_device, check_op_against_reference):
    from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm

    eps = 1e-6
    check_op_against_reference(
        "dwconv_layernorm",
        dwconv_layernorm,
        reference,
        make_inputs(*shape),
        eps,
        dtype=dtype,
        device=triton_device,
    )


def test_kernel_size_other_than_seven(triton_device, check_op_against_reference):
    from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm

    inputs = make_inputs(2, 21, 24, k=3)
    check_op_against_reference(
        "dwconv_layernorm k=3",
        dwconv_layernorm,
        reference,
        inputs,
        1e-5,
        dtype=torch.float32,
        device=triton_device,
    )


def test_dispatcher_routes_to_triton(triton_device, monkeypatch):
    from convnext_fast.ops.dwconv_layernorm import triton as module

    calls = []
    real = module.dwconv_layernorm_fwd
    monkeypatch.setattr(module, "dwconv_layernorm_fwd", lambda *a: calls.append(1) or real(*a))
    x, w, cb, nw, nb = (t.to(triton_device) for t in make_inputs(1, 12, 16))
    out = ops.dwconv_layernorm(x, w, cb, nw, nb, backend="triton")
    assert calls == [1]
    assert out.shape == x.shape


def test_registered_op_passes_opcheck(triton_device):
    """Schema, fake (meta) implementation and autograd registration agree with the real kernels."""
    from convnext_fast.ops.dwconv_layernorm import triton  # noqa: F401  (registers the op)

    x, w, cb, nw, nb = (t.to(triton_device) for t in make_inputs(1, 9, 8))
    torch.library.opcheck(
        torch.ops.convnext_fast.dwconv_layernorm_triton.default,
        (x.requires_grad_(), w.requires_grad_(), cb, nw, nb, 1e-6),
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


@pytest.mark.parametrize(
    ("argument", "bad", "message"),
    [
        (0, torch.randn(8, 16), "x must be channels-last"),
        (1, torch.randn(16, 1, 6), "odd kernel size"),
        (1, torch.randn(15, 1, 7), "conv_weight must be"),
        (3, torch.randn(15), "norm_weight must be"),
    ],
)
def test_wrong_shapes_name_the_argument(argument, bad, message, triton_device):
    from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm

    inputs = make_inputs(1, 8, 16)
    inputs[argument] = bad
    with pytest.raises(ValueError, match=message):
        dwconv_layernorm(*(t.to(triton_device) for t in inputs))
