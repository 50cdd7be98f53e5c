"""Whole-model latency/throughput, every peer side by side per (variant, batch) group, many symbols per
call (one session call for N windows), and peak RSS at B=256 (each in a fresh subprocess, so one
measurement cannot inflate another). The training step lives in bench_training.py. ``--cotenant`` runs
everything beside one busy process.

    pytest benchmarks/bench_model.py --benchmark-only --benchmark-json=bench.json
    python scripts/bench_table.py bench.json
    python -m benchmarks.bench_model --rss     # peak-RSS table (run from the repository root)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.conftest import IMPLS, forward_fn, reference_model, window

ROUNDS = {1: 100, 32: 5, 256: 2}  # B=256 tiny is ~2.5 s a call


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [1, 32, 256])
@pytest.mark.parametrize("variant", ["atto", "tiny"])
def test_forward(benchmark, group, variant, batch, impl):
    benchmark.group = group(f"model {variant} B={batch}")
    run = forward_fn(impl, variant, batch)
    run()  # compile / pack / first-touch outside the timing
    benchmark.pedantic(run, rounds=ROUNDS[batch], iterations=1, warmup_rounds=1)


SYMBOLS_ROUNDS = {1: 100, 4: 50, 16: 20, 64: 10}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("n", [1, 4, 16, 64])
@pytest.mark.parametrize("variant", ["atto", "tiny"])
def test_many_symbols(benchmark, group, variant, n, precision):
    """One session call for N windows (one per symbol), snapshot session, 2 threads: how it scales with N."""
    from convnext_fast.inference import InferenceSession

    benchmark.group = group(f"symbols {variant} {precision}")
    benchmark.extra_info["n"] = n
    session = InferenceSession(reference_model(variant), track_weights=False, precision=precision)
    x = window(n)
    session(x)
    benchmark.pedantic(lambda: session(x), rounds=SYMBOLS_ROUNDS[n], iterations=1, warmup_rounds=1)


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
