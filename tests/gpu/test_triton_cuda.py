"""The full Triton correctness grid on a real GPU (skipped without CUDA): fp32 / fp16 / bf16 with tl.dot in
its default precision, shapes from tiny to base widths (and C = 8, which the fused MLP's guard sends to
two GEMMs), deterministic backward within and across processes, bf16 autocast training through both
ops, batches past CUDA's 65,535 grid cap, the CUDA-graph session, and torch.compile tracing through the
registered ops. Covers what the interpreter cannot: compiled code, tensor-core dot precision and bf16."""

from __future__ import annotations

import pytest
import torch

from tests.child_env import child_env

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)
pytest.importorskip("triton")

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np

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
SHAPES = [
    (3, 5, 8),
    (2, 37, 40),
    (1, 70, 100),
    (8, 64, 96),
    (4, 32, 384),
    (2, 16, 768),
    (2, 8, 1024),
    (64, 64, 192),
]
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


def test_bf16_autocast_runs_stage_zero_in_bf16():
    """Under CUDA autocast the stem's LayerNorm returns fp32; the block ops must still run their GEMMs in
    bf16 (the fused MLP at C = 96) and keep the fp32 residual, within bf16's tolerance."""
    from convnext_fast.ops.bottleneck import triton as bn

    kernels = []
    real = bn.launch
    bn.launch = lambda tuned, *a, **k: kernels.append(tuned.fn.__name__) or real(tuned, *a, **k)
    try:
        ref = reference.ConvNeXt1d(
            in_chans=20, dims=(96, 192, 384, 768), depths=(1, 1, 1, 1), layer_scale_init=0.5
        )
        fused = convnext_fast.convert(ref.eval(), backend="triton").to(CUDA)
        x = torch.randn(8, 20, 256)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fused(x.to(CUDA))
    finally:
        bn.launch = real
    assert kernels[0] == "fused_mlp_kernel"
    expected = copy.deepcopy(ref).double()(x.double())
    assert_close("autocast logits", expected, out, 4 * TOLERANCE[torch.bfloat16])


def test_batch_past_the_grid_axis_cap():
    x, w, cb, nw, nb = (t.to(CUDA) for t in dwconv_inputs(70_000, 8, 16))
    compare = dwconv_reference(x[-3:], w, cb, nw, nb)
    assert_close("last samples", compare, dwconv_layernorm(x, w, cb, nw, nb)[-3:], 1e-5)


GRADIENT_DIGEST = """
import hashlib, sys, torch
sys.path.insert(0, {root!r})
from tests.ops.conftest import dwconv_layernorm_inputs, bottleneck_inputs
from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm
from convnext_fast.ops.bottleneck.triton import bottleneck
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
h = hashlib.sha256()
for op, inputs, extra in ((dwconv_layernorm, dwconv_layernorm_inputs(16, 256, 192), (1e-6,)),
                          (bottleneck, bottleneck_inputs(16, 64, 192), (None,))):
    leaves = [t.to("cuda", torch.bfloat16).requires_grad_() for t in inputs]
    out = op(*leaves, *extra)
    for g in torch.autograd.grad(out, leaves, torch.randn_like(out)):
        h.update(g.float().cpu().numpy().tobytes())
print(h.hexdigest())
"""


def test_gradients_are_bitwise_identical_across_processes(tmp_path):
    """Two processes with separate, cold autotune caches: same gradient bits (row kernels by design;
    the GEMMs through deterministic mode's rule-picked configs)."""
    root = str(Path(__file__).resolve().parents[2])
    digests = []
    for i in range(2):
        env = child_env(TRITON_CACHE_DIR=str(tmp_path / f"cache{i}"))
        result = subprocess.run(
            [sys.executable, "-c", GRADIENT_DIGEST.format(root=root)],
            env=env, capture_output=True, text=True, timeout=600, check=True,
        )  # fmt: skip
        digests.append(result.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]


def test_cuda_graph_session_matches_eager():
    from convnext_fast.gpu_session import CudaGraphSession

    ref = reference.ConvNeXt1d(
        in_chans=20, dims=(96, 192, 384, 768), depths=(1, 1, 2, 1), layer_scale_init=0.5
    )
    fused = convnext_fast.convert(ref.eval(), backend="triton").to(CUDA)
    session = CudaGraphSession(fused)
    for _ in range(2):
        x = torch.randn(1, 20, 256)
        with torch.no_grad():
            expected = fused(x.to(CUDA)).float().cpu().numpy()
        np.testing.assert_allclose(session(x), expected, rtol=1e-5, atol=1e-6)
    assert session.shapes == [(1, 20, 256)]
