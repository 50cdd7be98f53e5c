"""The full Triton correctness grid on a real GPU (skipped without CUDA): fp32 / fp16 / bf16 with tl.dot in
its default precision, shapes from tiny to base widths, deterministic backward, the fused model in bf16,
and torch.compile tracing through the registered ops. Covers what the interpreter cannot: compiled code,
tensor-core dot precision and bf16."""

from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)
pytest.importorskip("triton")

import copy

import convnext_fast
from convnext_fast import reference
from convnext_fast.ops.bottleneck.reference import bottleneck as bottleneck_reference
from convnext_fast.ops.bottleneck.triton import bottleneck
from convnext_fast.ops.dwconv_layernorm.reference import dwconv_layernorm as dwconv_reference
from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm
from tests.helpers import TOLERANCE, assert_close
from tests.ops.conftest import bottleneck_inputs, compare_with_reference, drop_path_scale
from tests.ops.conftest import dwconv_layernorm_inputs as dwconv_inputs

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (B, T, C): ragged T, non-power-of-two C, every tiny/base stage width, and a large-M case.
SHAPES = [(2, 37, 40), (1, 70, 100), (8, 64, 96), (4, 32, 384), (2, 16, 768), (2, 8, 1024), (64, 64, 192)]
IDS = [f"B{b}-T{t}-C{c}" for b, t, c in SHAPES]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_dwconv_layernorm_grid(shape, dtype):
    compare_with_reference(
        "dwconv_layernorm",
        dwconv_layernorm,
        dwconv_reference,
        dwconv_inputs(*shape),
        1e-6,
        dtype=dtype,
        device=CUDA,
    )


@pytest.mark.parametrize("with_scale", [False, True], ids=["no-drop-path", "drop-path"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_bottleneck_grid(shape, dtype, with_scale):
    scale = drop_path_scale(shape[0]).to(CUDA, dtype) if with_scale else None
    compare_with_reference(
        "bottleneck",
        bottleneck,
        bottleneck_reference,
        bottleneck_inputs(*shape),
        scale,
        dtype=dtype,
        device=CUDA,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_backward_is_deterministic(dtype):
    """Two-stage reductions, no atomics: the same inputs give bit-identical gradients."""
    for op, inputs, extra in (
        (dwconv_layernorm, dwconv_inputs(16, 256, 192), (1e-6,)),
        (bottleneck, bottleneck_inputs(16, 64, 192), (None,)),
    ):
        leaves = [t.to(CUDA, dtype).requires_grad_() for t in inputs]
        grad = torch.randn_like(op(*leaves, *extra))
        first = torch.autograd.grad(op(*leaves, *extra), leaves, grad)
        second = torch.autograd.grad(op(*leaves, *extra), leaves, grad)
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_model_on_cuda(dtype):
    ref = reference.ConvNeXt1d(
        in_chans=20, dims=(96, 192, 384, 768), depths=(1, 1, 2, 1), layer_scale_init=0.5
    )
    fused = convnext_fast.convert(ref.eval(), backend="triton").to(CUDA, dtype)
    x = torch.randn(8, 20, 256)
    expected = copy.deepcopy(ref).double()(x.double())
    # a whole network accumulates a few roundings per layer: 4× the per-op tolerance
    assert_close(f"logits {dtype}", expected, fused(x.to(CUDA, dtype)), 4 * TOLERANCE[dtype])


def test_torch_compile_traces_the_triton_ops():
    x, w, cb, nw, nb = (t.to(CUDA) for t in dwconv_inputs(2, 64, 96))
    compiled = torch.compile(dwconv_layernorm, fullgraph=True)
    assert_close(
        "compiled dwconv_layernorm", dwconv_reference(x, w, cb, nw, nb), compiled(x, w, cb, nw, nb), 1e-5
    )
