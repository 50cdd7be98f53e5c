"""Whole-model latency/throughput, every peer side by side per (variant, batch) group, plus a training
step and peak RSS at B=256 (each in a fresh subprocess, so one measurement cannot inflate another).

    pytest benchmarks/bench_model.py --benchmark-only --benchmark-json=bench.json
    python scripts/bench_table.py bench.json
    python -m benchmarks.bench_model --rss     # peak-RSS table (run from the repository root)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convnext_fast
from benchmarks.conftest import IMPLS, forward_fn, reference_model

ROUNDS = {1: 100, 32: 5, 256: 2}  # B=256 tiny is ~2.5 s a call


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 32, 256])
@pytest.mark.parametrize("variant", ["atto", "tiny"])
def test_forward(benchmark, variant, batch, impl):
    benchmark.group = f"model {variant} B={batch}"
    run = forward_fn(impl, variant, batch)
    run()  # compile / pack / first-touch outside the timing
    benchmark.pedantic(run, rounds=ROUNDS[batch], iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("impl", ["reference", "fused"])
def test_train_step(benchmark, impl):
    """Forward + backward + SGD step, atto, B=32, drop path on (train mode)."""
    benchmark.group = "train step atto B=32"
    model = reference_model("atto")
    model = convnext_fast.convert(model) if impl == "fused" else type(model)(**model.config)
    model.load_state_dict(reference_model("atto").state_dict())
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x, y = torch.randn(32, 20, 256), torch.randint(0, 3, (32,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    benchmark.pedantic(step, rounds=15, iterations=1, warmup_rounds=1)


RSS_SCRIPT = """
import resource, sys, torch
from benchmarks.conftest import forward_fn
impl, variant, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
run = forward_fn(impl, variant, batch)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before // 1024, after // 1024)
"""


def peak_rss_mib(impl: str, variant: str, batch: int) -> tuple[int, int]:
    """(peak RSS before the first forward, peak RSS after it) in MiB, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, impl, variant, str(batch)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout.split()
    return int(out[-2]), int(out[-1])


def rss_table(variant: str = "tiny", batch: int = 256) -> str:
    lines = [
        f"| {variant} B={batch} | peak RSS after setup (MiB) | peak RSS after 1st forward (MiB) | forward adds (MiB) |",
        "|---|---:|---:|---:|",
    ]
    for impl in IMPLS:
        before, after = peak_rss_mib(impl, variant, batch)
        lines.append(f"| {impl} | {before} | {after} | {after - before} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if "--rss" in sys.argv:
        print(rss_table())
