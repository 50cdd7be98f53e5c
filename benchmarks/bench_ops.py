"""Per-op and per-block timings at each stage's shapes of tiny (C_in=20, T=256 → T/4 … T/32), side by side:
the eager reference block, the fused custom ops (one torch dispatch each), the same C++ kernels called
straight from numpy (no torch dispatch, OpenBLAS GEMMs), and the inference session's block (`PackedBlock`:
weights packed once, the AVX2 panel GEMM). Also the batch-1 GEMMs themselves: the packed kernel against
OpenBLAS (the custom ops' GEMM) and torch's F.linear (MKL).

    pytest benchmarks/bench_ops.py --benchmark-only --benchmark-json=ops.json
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convnext_fast import reference
from convnext_fast._ext import _C
from convnext_fast.ops.bottleneck.cpu import bottleneck as bottleneck_cpu
from convnext_fast.ops.dwconv_layernorm.cpu import dwconv_layernorm as dwconv_layernorm_cpu

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")

# (C, T) of tiny's four stages at T=256; the stage-3 block (C=384, T=16) has its own target.
STAGES = [(96, 64), (192, 32), (384, 16), (768, 8)]
IMPLS = ("eager", "fused-ops", "cpp-direct", "session-block")


def block(c: int) -> reference.Block:
    torch.manual_seed(c)
    blk = reference.Block(c).eval()
    with torch.no_grad():
        blk.gamma.fill_(0.1)
    return blk


def block_fn(impl: str, c: int, t: int, batch: int):
    blk = block(c)
    x_bct = torch.randn(batch, c, t)
    if impl == "eager":
        return lambda: blk(x_bct)
    x = x_bct.transpose(1, 2).contiguous()
    p = {k: v.detach() for k, v in blk.state_dict().items()}
    if impl == "session-block":
        packed = _C.PackedBlock(c, reference.LN_EPS, {k: v.numpy() for k, v in p.items()})
        xn, out = x.numpy(), np.empty(tuple(x.shape), np.float32)
        return lambda: packed.forward(xn, out)
    args_dw = (p["conv_dw.weight"], p["conv_dw.bias"], p["norm.weight"], p["norm.bias"])
    args_mlp = (p["mlp.fc1.weight"], p["mlp.fc1.bias"], p["mlp.fc2.weight"], p["mlp.fc2.bias"], p["gamma"])
    if impl == "fused-ops":
        return lambda: bottleneck_cpu(x, dwconv_layernorm_cpu(x, *args_dw), *args_mlp)
    xn = x.numpy()
    dw = [a.numpy() for a in args_dw]
    mlp = [a.numpy() for a in args_mlp]
    n, y = np.empty_like(xn), np.empty_like(xn)

    def direct():
        _C.dwconv_layernorm(xn, *dw, 1e-6, n)
        _C.bottleneck(xn, n, *mlp, None, y)

    return direct


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize(("c", "t"), STAGES, ids=[f"C{c}-T{t}" for c, t in STAGES])
def test_block(benchmark, c, t, batch, impl):
    benchmark.group = f"block C={c} T={t} B={batch}"
    run = block_fn(impl, c, t, batch)
    with torch.no_grad():
        run()
        benchmark.pedantic(run, rounds=50 if batch == 1 else 10, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("impl", ["torch-eager", "fused-op", "cpp-direct"])
@pytest.mark.parametrize(("c", "t"), STAGES, ids=[f"C{c}-T{t}" for c, t in STAGES])
def test_dwconv_layernorm(benchmark, c, t, impl):
    benchmark.group = f"dwconv+layernorm C={c} T={t} B=1"
    blk = block(c)
    x = torch.randn(1, t, c)
    w, cb, nw, nb = (
        blk.conv_dw.weight.detach(),
        blk.conv_dw.bias.detach(),
        blk.norm.weight.detach(),
        blk.norm.bias.detach(),
    )
    if impl == "torch-eager":
        x_bct = x.transpose(1, 2).contiguous()

        def run():
            return F.layer_norm(
                F.conv1d(x_bct, w, cb, padding=3, groups=c).transpose(1, 2), (c,), nw, nb, 1e-6
            )
    elif impl == "fused-op":

        def run():
            return dwconv_layernorm_cpu(x, w, cb, nw, nb)
    else:
        xn, out, args = x.numpy(), np.empty((1, t, c), np.float32), [a.numpy() for a in (w, cb, nw, nb)]

        def run():
            _C.dwconv_layernorm(xn, *args, 1e-6, out)

    with torch.no_grad():
        benchmark.pedantic(run, rounds=100, iterations=1, warmup_rounds=5)


@pytest.mark.parametrize("impl", ["torch-mkl", "openblas", "packed"])
@pytest.mark.parametrize(
    ("m", "k", "n"),
    [(8, 768, 3072), (16, 384, 1536), (32, 192, 768), (64, 96, 384), (8, 3072, 768), (8, 320, 1280),
     # the training step's fc1/fc2 at atto B=32 T=256 (rows = 32 · T/4, /8, /16, /32): the GEMM floor of
     # issue 15's training target
     (2048, 40, 160), (2048, 160, 40), (1024, 80, 320), (1024, 320, 80), (512, 160, 640), (512, 640, 160),
     (256, 320, 1280), (256, 1280, 320)],
)  # fmt: skip
def test_small_m_linear(benchmark, m, k, n, impl):
    benchmark.group = f"linear M={m} K={k} N={n}"
    rng = np.random.default_rng(0)
    a, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (n, k), (n,)))
    if impl == "torch-mkl":
        ta, tw, tb = torch.from_numpy(a), torch.from_numpy(w), torch.from_numpy(b)

        def run():
            return F.linear(ta, tw, tb)
    elif impl == "openblas":
        out = np.empty((m, n), np.float32)

        def run():
            _C.linear(a, w, b, out)
    else:
        out, lin = np.empty((m, n), np.float32), _C.PackedLinear(w, b)

        def run():
            lin.forward(a, out)

    benchmark.pedantic(run, rounds=100, iterations=1, warmup_rounds=5)
    benchmark.extra_info["gflops"] = 2 * m * k * n / benchmark.stats.stats.min / 1e9
