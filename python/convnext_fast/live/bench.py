"""``convnext-fast bench``: tick-to-signal latency of the live loop on a full-speed replay.

An untrained model of ``--variant`` (weights do not change the cost) on the SYNTHETIC market; every
candle goes through the same :class:`~convnext_fast.live.loop.LiveEngine` as a live feed. Reports
p50/p90/p99/max per phase (features / model / decision / total) in µs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time

from ..cli import argtypes, options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add(parser, "variant", help="model size (untrained: weights do not change the cost)")
    parser.add_argument(
        "--bars", type=argtypes.positive_int, default=500, help="SYNTHETIC candles replayed after warm-up"
    )
    options.add(parser, "window", "backend", "threads")


def untrained_engine(variant: str, window: int, backend: str = "auto"):
    """``(engine, backend_used)`` of an UNTRAINED ``variant`` on the default features (raw, as an untrained
    model takes them): what latency measurements run."""
    from .. import reference
    from ..features.pipeline import FeatureSpec
    from ..train.checkpoint import CheckpointMeta
    from .session import DecisionRule, build_engine

    spec = FeatureSpec()
    model = reference.create(variant, in_chans=spec.n_channels).eval()
    meta = CheckpointMeta.untrained(model.config, spec)
    return build_engine(model, meta, rule=DecisionRule(), backend=backend, window=window)


def measure(variant: str, bars: int, window: int, backend: str = "auto", threads: int = 1) -> dict:
    """``{"backend", "setup_s", "latency_us": {phase: {n, p50, p90, p99, max}}}`` for one replay."""
    from ..data.synthetic import synthetic_candles
    from .loop import LiveContext, OutputSink, run_live
    from .predictor import set_threads
    from .sources import replay

    set_threads(threads)
    started = time.perf_counter()
    engine, used = untrained_engine(variant, window, backend)
    need = engine.history_needed
    candles = synthetic_candles(need + bars, seed=0)
    engine.warm_up(candles[:need])
    setup_s = time.perf_counter() - started
    ctx = LiveContext("SYNTHETIC", "60", 3_600_000)
    asyncio.run(
        run_live(engine, replay(candles[need:], interval_ms=3_600_000), ctx, OutputSink(io.StringIO()))
    )
    return {
        "backend": used,
        "setup_s": setup_s,
        "latency_us": engine.latency.summary(),
        "table": engine.latency.table(),
    }


def run(args: argparse.Namespace) -> int:
    result = measure(args.variant, args.bars, args.window, args.backend, args.threads)
    print(
        f"SYNTHETIC replay, {args.variant}, T={args.window}, backend {result['backend']}, "
        f"{args.threads} thread(s), setup {result['setup_s']:.2f} s"
    )
    print(result["table"])
    return 0
