"""The live loop: closed candle → streaming features → window ring → model → signal → size → paper broker.

:class:`LiveEngine` is the synchronous per-candle core (no I/O but its output sink), so a replayed file and
a live WebSocket feed go through exactly the same code. :func:`run_live` is the async driver around it:
it backfills gaps through REST before emitting new signals, stops cleanly on SIGINT/SIGTERM, flushes the
log and writes the resume state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal as os_signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ..data.candles import Candle, Candles, format_ms
from .latency import LatencyStats
from .ring import WindowRing
from .state import LiveState, save_state

log = logging.getLogger("convnext_fast.live")

HOLD_SIGNAL = 0


def candle_problem(candle: Candle) -> str | None:
    """Why a candle must not reach the model (None when it is fine): the one OHLCV rule, and closed."""
    from ..data.ohlcv import bar_problem  # the one rule's home; imported here to keep this module's imports

    problem = bar_problem(candle.open, candle.high, candle.low, candle.close, candle.volume)
    if problem is None and not candle.closed:
        return "candle is not closed yet"
    return problem


class LiveEngine:
    """Per-candle state machine. ``features`` offers ``update(o, h, l, c, v) -> float32 [C]`` (the
    streaming twin of the batch features); ``predict(x [1, C, T]) -> probs [1, 3]``; ``broker`` offers
    ``on_bar(open, high, low, close, signal, size)`` and ``state()``; ``normalize`` maps a raw feature
    vector to the model's input scale (the checkpoint's normalisation)."""

    def __init__(
        self,
        *,
        features,
        predict: Callable[[np.ndarray], np.ndarray],
        broker,
        window: int,
        n_channels: int,
        signal_fn: Callable[..., int],
        threshold: float,
        size_fn: Callable[[int, np.ndarray], float],
        normalize: Callable[[np.ndarray], np.ndarray] | None = None,
        warmup_bars: int = 0,
    ):
        self.features, self.predict, self.broker = features, predict, broker
        self.signal_fn, self.threshold, self.size_fn = signal_fn, threshold, size_fn
        self.normalize = normalize
        self.warmup_bars = int(warmup_bars)  # bars until every feature channel is finite
        self.ring = WindowRing(n_channels, window)
        self._x = np.zeros((1, n_channels, window), dtype=np.float32)
        self._finite_run = 0  # consecutive bars whose feature vector was all finite
        self.last_start_ms: int | None = None
        self.bars_processed = 0
        self.latency = LatencyStats()

    @property
    def history_needed(self) -> int:
        """Closed candles to seed before the first signal: indicator warm-up plus one full window, plus
        slack for a rejected candle or two."""
        return self.warmup_bars + self.ring.window + 8

    @property
    def ready(self) -> bool:
        """True once the window holds only finite features (indicator warm-up is over)."""
        return self._finite_run >= self.ring.window

    def admit(self, candle: Candle) -> bool:
        """Reject (and log) duplicates, out-of-order and invalid candles; they never reach the model."""
        if self.last_start_ms is not None and candle.start_ms <= self.last_start_ms:
            kind = "duplicate" if candle.start_ms == self.last_start_ms else "out-of-order"
            log.info(
                "ignored %s candle %s (last processed %s)",
                kind,
                format_ms(candle.start_ms),
                format_ms(self.last_start_ms),
            )
            return False
        problem = candle_problem(candle)
        if problem is not None:
            log.warning("rejected candle %s: %s (%s)", format_ms(candle.start_ms), problem, tuple(candle))
            return False
        return True

    def _push_features(self, candle: Candle) -> None:
        vec = self.features.update(candle.open, candle.high, candle.low, candle.close, candle.volume)
        if self.normalize is not None:
            vec = self.normalize(vec)
        self._finite_run = self._finite_run + 1 if np.isfinite(vec).all() else 0
        self.ring.push(np.asarray(vec, dtype=np.float32))
        self.last_start_ms = int(candle.start_ms)

    def warm_up(self, history: Candles) -> int:
        """Seed the streaming features and the window from history (no signals, no broker). Returns the
        number of candles used."""
        used = 0
        for candle in history:
            if self.admit(candle):
                self._push_features(candle)
                used += 1
        return used

    def step(self, candle: Candle) -> dict[str, Any] | None:
        """Process one closed candle; returns its output record, or None when the candle was rejected."""
        if not self.admit(candle):
            return None
        t0 = time.perf_counter_ns()
        self._push_features(candle)
        t1 = time.perf_counter_ns()
        probs = None
        if self.ready:
            self.ring.batch_into(self._x)
            probs = self.predict(self._x)[0]
        t2 = time.perf_counter_ns()
        if probs is None:
            sig, size = HOLD_SIGNAL, 0.0
        else:
            sig = int(self.signal_fn(float(probs[0]), float(probs[1]), float(probs[2]), self.threshold))
            size = float(self.size_fn(sig, probs))
        self.broker.on_bar(candle.open, candle.high, candle.low, candle.close, sig, size)
        t3 = time.perf_counter_ns()
        self.bars_processed += 1
        latency = {"features": (t1 - t0) / 1e3, "model": (t2 - t1) / 1e3, "decision": (t3 - t2) / 1e3}
        latency["total"] = (t3 - t0) / 1e3
        if probs is not None:
            self.latency.add_many(latency)
        return {
            "time": format_ms(candle.start_ms),
            "start_ms": int(candle.start_ms),
            "close": candle.close,
            "probs": None if probs is None else [round(float(p), 6) for p in probs],
            "signal": sig,
            "size": size,
            "position": self.broker.position,
            "equity": self.broker.equity,
            "latency_us": {k: round(v, 1) for k, v in latency.items()},
        }


class OutputSink:
    """JSON lines (a start record, one per closed candle, a summary) to ``stream`` and/or a compact human
    view to ``human`` (the CLI passes stdout as ``human`` when it is a TTY)."""

    def __init__(self, stream: IO[str] | None, human: IO[str] | None = None):
        self.stream, self.human = stream, human

    def _json(self, record: dict[str, Any]) -> None:
        if self.stream is not None:
            self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")

    def start(self, info: dict[str, Any], banner: str) -> None:
        """The first line says where the candles come from (e.g. SYNTHETIC) and what runs."""
        self._json({"event": "start", **info})
        print(banner, file=self.human or sys.stderr, flush=True)

    def info(self, text: str) -> None:
        print(text, file=self.human or sys.stderr, flush=True)

    def emit(self, record: dict[str, Any]) -> None:
        self._json({"event": "candle", **record})
        if self.human is not None:
            probs = record["probs"]
            shown = "warming up" if probs is None else f"L {probs[0]:.2f} S {probs[1]:.2f} H {probs[2]:.2f}"
            print(
                f"{record['time']}  close {record['close']:>12.2f}  {shown:<22} signal {record['signal']:+d}  "
                f"pos {record['position']:+.6g}  equity {record['equity']:.2f}  "
                f"model {record['latency_us']['model']:.0f} µs",
                file=self.human,
            )

    def summary(self, latency: LatencyStats, extra: dict[str, Any]) -> None:
        self._json({"event": "summary", "latency_us": latency.summary(), **extra})
        self.info("latency per closed candle (µs):\n" + latency.table())

    def flush(self) -> None:
        for stream in (self.stream, self.human):
            if stream is not None:
                stream.flush()


@dataclass
class LiveContext:
    """What :func:`run_live` needs besides the engine: where resume state goes and how to backfill."""

    symbol: str
    interval: str
    interval_ms: int
    backfill: Callable[[int, int], Candles] | None = None  # (first_missing_ms, before_ms) -> closed candles
    state_path: str | None = None
    max_bars: int | None = None  # stop after this many processed candles (tests, benchmarks)
    after_candle: Callable[[LiveEngine], None] | None = None  # e.g. mirror the paper intent to real orders


async def run_live(
    engine: LiveEngine, source: AsyncIterator[Candle], ctx: LiveContext, sink: OutputSink
) -> int:
    """Drive ``engine`` from ``source`` until it ends, ``max_bars`` is reached or SIGINT/SIGTERM arrives.
    Returns the number of candles processed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (os_signal.SIGINT, os_signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    processed = 0
    source_iter = aiter(source)
    try:
        while not stop.is_set():
            next_task = asyncio.ensure_future(anext(source_iter))
            stop_task = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({next_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_task.cancel()
            if next_task not in done:
                next_task.cancel()
                break
            try:
                candle = next_task.result()
            except StopAsyncIteration:
                break
            for item in [*await _fill_gap(engine, candle, ctx), candle]:
                record = engine.step(item)
                if record is None:
                    continue
                record["backfilled"] = item is not candle
                sink.emit(record)
                processed += 1
            if ctx.after_candle is not None:
                ctx.after_candle(engine)
            if ctx.max_bars is not None and processed >= ctx.max_bars:
                break
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await source_iter.aclose()
        sink.flush()
        if ctx.state_path and engine.last_start_ms is not None:
            state = LiveState(
                ctx.symbol, ctx.interval, engine.last_start_ms, engine.broker.state(), engine.bars_processed
            )
            save_state(ctx.state_path, state)
            sink.info(f"state written to {ctx.state_path} (resume with --resume)")
    return processed


async def _fill_gap(engine: LiveEngine, candle: Candle, ctx: LiveContext) -> list[Candle]:
    """Missing closed candles between the last processed one and ``candle``, fetched through REST."""
    last = engine.last_start_ms
    if last is None or candle.start_ms <= last + ctx.interval_ms:
        return []
    first_missing = last + ctx.interval_ms
    n_missing = (candle.start_ms - first_missing) // ctx.interval_ms
    if ctx.backfill is None:
        log.warning(
            "gap of %d candles before %s and no REST backfill configured",
            n_missing,
            format_ms(candle.start_ms),
        )
        return []
    try:
        # In a thread, so a WebSocket keeps answering pings while REST is slow.
        fetched = await asyncio.to_thread(ctx.backfill, first_missing, candle.start_ms - 1)
    except Exception as exc:  # a failed backfill must not kill the loop: say what is missing, go on
        log.error(
            "gap of %d candles before %s: REST backfill failed (%s)",
            n_missing,
            format_ms(candle.start_ms),
            exc,
        )
        return []
    missing = [c for c in fetched if first_missing <= c.start_ms < candle.start_ms]
    log.warning(
        "gap of %d candles before %s: backfilled %d through REST",
        n_missing,
        format_ms(candle.start_ms),
        len(missing),
    )
    return missing
