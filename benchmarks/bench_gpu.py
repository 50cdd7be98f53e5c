"""GPU benchmarks of the fused Triton ops (skipped without CUDA): eager reference vs torch.compile of the
reference vs the Triton kernels, forward and forward+backward, bf16, at tiny/base stage shapes with
T = 256 input bars.

Every timed call ends with ``torch.cuda.synchronize()``, so pytest-benchmark's **median** column is the
wall time of one synchronised call: GPU work plus Python dispatch and launch (what a caller waits for).
``extra_info["gpu_ms"]`` is ``triton.testing.do_bench``'s median (CUDA events around back-to-back calls:
GPU time when the GPU is the slower side), beside GB/s and TFLOP/s from the performance model's
minimum bytes and FLOPs and the model's prediction (scripts/gpu_perf_model.py).

    pytest benchmarks/bench_gpu.py --benchmark-only --benchmark-columns=median
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA device", allow_module_level=True)
triton = pytest.importorskip("triton")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gpu_perf_model as model  # noqa: E402

from convnext_fast.ops.bottleneck.reference import bottleneck as bottleneck_reference  # noqa: E402
from convnext_fast.ops.bottleneck.triton import bottleneck as bottleneck_triton  # noqa: E402
from convnext_fast.ops.dwconv_layernorm.reference import dwconv_layernorm as dwconv_reference  # noqa: E402
from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm as dwconv_triton  # noqa: E402

DTYPE = torch.bfloat16
# (variant, stage, C, rows per sample at T=256) for tiny and base; B spans live inference to training.
STAGES = [("tiny", 1, 96, 64), ("tiny", 3, 384, 16), ("tiny", 4, 768, 8), ("base", 3, 512, 16)]
BATCHES = [1, 64, 512]
OPS = {
    "dwconv_layernorm": (dwconv_reference, dwconv_triton, model.dwconv_layernorm_kernels),
    "bottleneck": (bottleneck_reference, bottleneck_triton, model.bottleneck_kernels),
}


def make_inputs(op: str, b: int, t: int, c: int) -> list:
    x = torch.randn(b, t, c, device="cuda", dtype=DTYPE)
    if op == "dwconv_layernorm":
        params = [torch.randn(c, 1, 7) * 0.3, torch.randn(c), torch.ones(c), torch.zeros(c)]
        return [x, *(p.to("cuda", DTYPE) for p in params), 1e-6]
    h = 4 * c
    params = [
        torch.randn(h, c) / c**0.5,
        torch.zeros(h),
        torch.randn(c, h) / h**0.5,
        torch.zeros(c),
        torch.ones(c),
    ]
    return [x, torch.randn_like(x), *(p.to("cuda", DTYPE) for p in params)]


def step(fn, inputs: list, backward: bool):
    tensors = [a for a in inputs if isinstance(a, torch.Tensor)]
    if not backward:
        return lambda: fn(*inputs)
    for t in tensors:
        t.requires_grad_(True)
    grad = torch.randn_like(fn(*inputs))
    return lambda: torch.autograd.grad(fn(*inputs), tensors, grad)


def synchronised(run):
    """``run`` then wait for the GPU: without this a timer measures only the launches being queued."""

    def call():
        run()
        torch.cuda.synchronize()

    return call


@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["eager", "compile", "triton"])
@pytest.mark.parametrize("b", BATCHES, ids=lambda b: f"B{b}")
@pytest.mark.parametrize("stage", STAGES, ids=lambda s: f"{s[0]}-s{s[1]}-C{s[2]}")
@pytest.mark.parametrize("op", list(OPS))
def test_gpu_op(benchmark, op, stage, b, impl, backward):
    reference, fused, kernels_of = OPS[op]
    _variant, _stage, c, t = stage
    fn = {"eager": reference, "compile": torch.compile(reference), "triton": fused}[impl]
    run = step(fn, make_inputs(op, b, t, c), backward)
    run()  # compile / autotune outside the timing
    torch.cuda.synchronize()
    gpu_ms = triton.testing.do_bench(run, return_mode="median")
    seqs = kernels_of(b * t, c)
    side = "eager" if impl == "eager" else "fused"
    kernels = [k for d in (("fwd", "bwd") if backward else ("fwd",)) for k in seqs[f"{side} {d}"]]
    predicted_s = model.seconds(kernels)
    benchmark.extra_info.update(
        gpu_ms=gpu_ms,
        gb_per_s=sum(k.bytes for k in kernels) / (gpu_ms * 1e-3) / 1e9,
        tflop_per_s=sum(k.flops for k in kernels) / (gpu_ms * 1e-3) / 1e12,
        model_ms=predicted_s * 1e3,
    )
    benchmark.pedantic(synchronised(run), rounds=20, warmup_rounds=3)
