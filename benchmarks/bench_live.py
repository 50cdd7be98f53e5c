"""Live loop latency: tick-to-signal per closed candle (features → ring → model → signal → paper broker) on
a full-speed SYNTHETIC replay, atto and tiny at T=256, the C++ session vs the reference eager forward side
by side; and startup to first signal of ``python -m convnext_fast.live`` (warm numba caches).

Run: ``pytest benchmarks/bench_live.py --benchmark-only`` (p50/p90/p99/max land in ``extra_info``, which
``--benchmark-json`` writes out; results in ``benchmarks/results_live.md``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from convnext_fast.backends import backends
from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.live.bench import untrained_engine
from convnext_fast.live.predictor import set_threads

WINDOW = 256
BARS = 300


def _engine(variant: str, backend: str):
    set_threads(1)
    engine, used = untrained_engine(variant, WINDOW, backend)
    assert used == backend
    candles = synthetic_candles(engine.history_needed + BARS + 50, seed=1)
    engine.warm_up(candles[: engine.history_needed])
    return engine, iter(candles[engine.history_needed :])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("variant", ["atto", "tiny"])
def test_tick_to_signal(benchmark, variant, backend):
    if backends()[backend] != "live":
        pytest.skip(f"backend {backend}: {backends()[backend]}")
    engine, stream = _engine(variant, backend)
    for _ in range(10):  # first calls pay one-time costs (packing, allocator)
        engine.step(next(stream))
    engine.latency = type(engine.latency)()
    record = benchmark.pedantic(engine.step, setup=lambda: ((next(stream),), {}), rounds=BARS, iterations=1)
    assert record["probs"] is not None
    summary = engine.latency.summary()
    benchmark.extra_info.update(
        {f"{phase}_{k}_us": v for phase, row in summary.items() for k, v in row.items()}
    )


def test_startup_to_first_signal(benchmark, tmp_path):
    """Wall time of a whole ``python -m convnext_fast.live`` process that stops after its first signal."""
    out = tmp_path / "live.jsonl"
    cmd = [sys.executable, "-m", "convnext_fast.live", "--source", "synthetic", "--max-bars", "1",
           "--window", str(WINDOW), "--out", str(out), "--state", str(tmp_path / "s.json")]  # fmt: skip

    def launch():
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - start

    launch()  # warm the numba caches
    seconds = benchmark.pedantic(launch, rounds=3, iterations=1)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[1]["event"] == "candle" and records[1]["probs"] is not None
    benchmark.extra_info["process_wall_s"] = seconds
    benchmark.extra_info["in_process_startup_s"] = records[0]["startup_s"]
