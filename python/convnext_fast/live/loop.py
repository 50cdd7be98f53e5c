"""The live loop: closed candle → streaming features → window ring → model → decision → paper broker.

:class:`LiveEngine` is the synchronous per-candle core (no I/O), so a replayed file and a live WebSocket
feed go through exactly the same code, and the decision is :mod:`convnext_fast.trading.decision`'s, the
backtest's own. :func:`run_live` is the async driver around it: it backfills gaps through REST before
emitting new signals, refetches a candle that spikes past ``--max-jump``, commits every candle to the
durable store (:mod:`.state`) before taking the next, and stops within moments on SIGINT/SIGTERM even
while a REST call hangs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import json
import logging
import signal as os_signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from ..data.candles import Candle, Candles, format_ms
from ..errors import UserError
from ..trading.decision import DecisionPolicy
from .latency import LatencyStats
from .metrics import LiveMetrics
from .ring import WindowRing
from .state import LiveStore

log = logging.getLogger("convnext_fast.live")


def candle_problem(candle: Candle) -> str | None:
    """Why a candle must not reach the model (None when it is fine): the one OHLCV rule, and closed."""
    from ..data.ohlcv import bar_problem  # the one rule's home; imported here to keep this module's imports

    problem = bar_problem(candle.open, candle.high, candle.low, candle.close, candle.volume)
    if problem is None and not candle.closed:
        return "candle is not closed yet"
    return problem


class LiveEngine:
    """Per-candle state machine. ``features`` offers ``update(o, h, l, c, v) -> float32 [C]`` (the
    streaming twin of the batch features) and ``get_state``/``set_state``; ``predict(x [1, C, T]) -> raw
    outputs [1, K]``; ``policy`` (:class:`~convnext_fast.trading.decision.DecisionPolicy`) turns them into a
    signal exactly as the backtest does; ``broker`` offers ``on_bar(open, high, low, close, signal, size)``
    and ``state()``; ``normalize`` maps a raw feature vector to the model's input scale.

    ``max_jump`` rejects a candle whose high or low is more than that fraction away from the previous close
    (a spike from a bad feed); the driver refetches it through REST instead of trading it."""

    def __init__(
        self,
        *,
        features,
        predict: Callable[[np.ndarray], np.ndarray],
        broker,
        window: int,
        n_channels: int,
        policy: DecisionPolicy,
        size_fn: Callable[[int, np.ndarray | None], float],
        normalize: Callable[[np.ndarray], np.ndarray] | None = None,
        warmup_bars: int = 0,
        max_jump: float | None = None,
    ):
        self.features, self.predict, self.broker = features, predict, broker
        self.policy, self.size_fn = policy, size_fn
        self.normalize = normalize
        self.warmup_bars = int(warmup_bars)  # bars until every feature channel is finite
        if max_jump is not None and not max_jump > 0:
            raise UserError(f"--max-jump must be > 0 (a fraction of the previous close), got {max_jump}")
        self.max_jump = max_jump
        self.ring = WindowRing(n_channels, window)
        self._x = np.zeros((1, n_channels, window), dtype=np.float32)
        self._finite_run = 0  # consecutive bars whose feature vector was all finite
        self.last_start_ms: int | None = None
        self.last_close: float | None = None
        self.bars_processed = 0
        self.latency = LatencyStats()
        # Optional hooks the CLI sets (live/order_cli.py): ``sizer`` (observe(close) every closed bar,
        # size(signal, probs); replaces size_fn) and ``funding`` (rate_for_bar(start_ms), charged by the
        # broker at the bar's close); their state rides in the snapshot.
        self.sizer = None
        self.funding = None

    @property
    def history_needed(self) -> int:
        """Fewest closed candles before the first signal: indicator warm-up plus one full window, plus
        slack for a rejected candle or two. Exact parity with a backtest over all data needs more (see
        :meth:`~convnext_fast.features.pipeline.FeatureSpec.history_bars`)."""
        return self.warmup_bars + self.ring.window + 8

    @property
    def ready(self) -> bool:
        """True once the window holds only finite features (indicator warm-up is over)."""
        return self._finite_run >= self.ring.window

    def problem(self, candle: Candle) -> tuple[str, str] | None:
        """``(kind, why)`` when ``candle`` must not reach the model: kind ``"stale"`` (duplicate or out of
        order), ``"invalid"`` or ``"jump"``; None when it is fine."""
        if self.last_start_ms is not None and candle.start_ms <= self.last_start_ms:
            kind = "duplicate" if candle.start_ms == self.last_start_ms else "out-of-order"
            return "stale", (
                f"{kind} candle {format_ms(candle.start_ms)} (last processed {format_ms(self.last_start_ms)})"
            )
        why = candle_problem(candle)
        if why is not None:
            return "invalid", why
        if self.max_jump is not None and self.last_close is not None:
            ref = self.last_close
            jump = max(candle.high / ref, ref / candle.low) - 1.0
            if jump > self.max_jump:
                return (
                    "jump",
                    f"moves {jump:.1%} from the previous close {ref:g} (--max-jump {self.max_jump:g})",
                )
        return None

    def admit(self, candle: Candle) -> bool:
        """Reject (and log) duplicates, out-of-order, invalid and spiking candles; they never reach the
        model."""
        found = self.problem(candle)
        if found is None:
            return True
        kind, why = found
        if kind == "stale":
            log.info("ignored %s", why)
        else:
            log.warning("rejected candle %s: %s (%s)", format_ms(candle.start_ms), why, tuple(candle))
        return False

    def _push_features(self, candle: Candle) -> None:
        vec = self.features.update(candle.open, candle.high, candle.low, candle.close, candle.volume)
        if self.normalize is not None:
            vec = self.normalize(vec)
        self._finite_run = self._finite_run + 1 if np.isfinite(vec).all() else 0
        self.ring.push(np.asarray(vec, dtype=np.float32))
        self.last_start_ms = int(candle.start_ms)
        self.last_close = float(candle.close)

    def warm_up(self, history: Candles) -> int:
        """Seed the streaming features and the window from history (no signals, no broker). Returns the
        number of candles used."""
        used = 0
        for candle in history:
            if self.admit(candle):
                self._push_features(candle)
                used += 1
        return used

    def warm_jit(self) -> float:
        """Before the first live candle: compile (or load from numba's cache) the broker's jitted step on a
        throwaway broker with the same rules and the streaming features' step, and run the model once, so
        the first candle pays for none of them (measured on the shared 2-core box, first candle: 28-42 ms
        without this and 8-10 ms with it when numba's cache is on disk; 6.6 s vs 5 ms with an empty
        cache). Returns the seconds spent."""
        from ..trading.broker import PaperBroker

        started = time.perf_counter()
        config = getattr(self.broker, "config", None)
        scratch = PaperBroker(config)
        # a long, a flip to short (closes a trade), a hold, with funding: every branch the first bar can take
        for signal in (1, -1, 0):
            scratch.on_bar(100.0, 101.0, 99.0, 100.5, signal, 1.0, 1e-4)
        scratch.close_position(100.0)
        # The streaming features' step: a fresh run compiles it while seeding from history, a resumed one
        # (restored state, no history) would compile it on its first candle. ``revise`` runs the same
        # compiled step without consuming a bar, so the restored state is untouched.
        revise = getattr(self.features, "revise", None)
        if revise is not None:
            price = self.last_close if self.last_close and self.last_close > 0 else 100.0
            revise(price, price, price, price, 1.0)
        # one forward on a zero window too: the model's first call allocates and picks its kernels (the
        # predictors are stateless, so this changes no later output)
        self.policy.one(np.asarray(self.predict(np.zeros_like(self._x))[0], dtype=np.float64))
        return time.perf_counter() - started

    def step(self, candle: Candle) -> dict[str, Any] | None:
        """Process one closed candle; returns its output record, or None when the candle was rejected."""
        if not self.admit(candle):
            return None
        return self._step(candle)

    def _step(self, candle: Candle) -> dict[str, Any]:
        t0 = time.perf_counter_ns()
        self._push_features(candle)
        if self.sizer is not None:
            self.sizer.observe(candle.close)
        t1 = time.perf_counter_ns()
        outputs = None
        if self.ready:
            self.ring.batch_into(self._x)
            outputs = self.predict(self._x)[0]
        t2 = time.perf_counter_ns()
        return self._decide(candle, outputs, t0, t1, t2)

    def _decide(
        self, candle: Candle, outputs: np.ndarray | None, t0: int, t1: int, t2: int
    ) -> dict[str, Any]:
        """Decision, broker and output record of a candle whose features are pushed and whose model
        outputs (None: window not ready) are known; ``t0..t2`` time the phases before it. Split from
        :meth:`_step` so the multi-symbol engine (live/universe.py) can batch the model call."""
        if outputs is None:
            sig, probs, score = self.policy.hold()
            size = 0.0
        else:
            sig, probs, score = self.policy.one(outputs)
            size = float((self.sizer.size if self.sizer is not None else self.size_fn)(sig, probs))
        bar = (candle.open, candle.high, candle.low, candle.close, sig, size)
        if self.funding is not None:
            self.broker.on_bar(*bar, self.funding.rate_for_bar(candle.start_ms))
        else:
            self.broker.on_bar(*bar)
        t3 = time.perf_counter_ns()
        self.bars_processed += 1
        latency = {"features": (t1 - t0) / 1e3, "model": (t2 - t1) / 1e3, "decision": (t3 - t2) / 1e3}
        latency["total"] = (t3 - t0) / 1e3
        if outputs is not None:
            self.latency.add_many(latency)
        record = {
            "time": format_ms(candle.start_ms),
            "start_ms": int(candle.start_ms),
            "close": candle.close,
            "probs": None if probs is None else [round(float(p), 6) for p in probs],
        }
        if not self.policy.classification:
            record["pred"] = None if outputs is None else float(score)
        record.update(
            {
                "signal": sig,
                "size": size,
                "position": self.broker.position,
                "equity": self.broker.equity,
                "latency_us": {k: round(v, 1) for k, v in latency.items()},
            }
        )
        return record

    # ---- durable state -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything a restart needs to continue bit for bit: the broker, the streaming features, the
        window, the last candle. Bytes for the arrays, plain JSON types for the rest."""
        features = self.features.get_state()
        ring = self.ring.get_state()
        return {
            "last_start_ms": self.last_start_ms,
            "bars_processed": self.bars_processed,
            "broker": self.broker.state(),
            "scalars": {
                "finite_run": self._finite_run,
                "last_close": self.last_close,
                "feature_bars": features["n_bars"],
                "feature_spec": features["spec"],
                "ring_count": ring["count"],
                **({"sizer": self.sizer.state()} if self.sizer is not None else {}),
                **({"funding": self.funding.state()} if self.funding is not None else {}),
            },
            "features": features["state"],
            "ring": ring["columns"],
        }

    def restore(self, engine_state: dict, last_start_ms: int, bars_processed: int) -> None:
        """Continue from a :meth:`snapshot` (the broker is restored by whoever built it)."""
        sc = engine_state["scalars"]
        self.features.set_state(
            {"spec": sc["feature_spec"], "n_bars": sc["feature_bars"], "state": engine_state["features"]}
        )
        self.ring.set_state({"count": sc["ring_count"], "columns": engine_state["ring"]})
        self._finite_run = min(int(sc["finite_run"]), self.ring.count)
        self.last_close = sc["last_close"]
        self.last_start_ms = int(last_start_ms)
        self.bars_processed = int(bars_processed)
        self.restore_hooks(engine_state)

    def restore_hooks(self, engine_state: dict) -> None:
        """The sizer's and funding schedule's saved state, for whichever of them is attached (call again
        after attaching them: :meth:`restore` may run first)."""
        sc = engine_state["scalars"]
        if self.sizer is not None and "sizer" in sc:
            self.sizer.set_state(sc["sizer"])
        if self.funding is not None and "funding" in sc:
            self.funding.set_state(sc["funding"])


def _stamp() -> str:
    return (
        datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class OutputSink:
    """JSON lines (a start record, one per closed candle, heartbeats, a summary) to ``stream`` and/or a
    compact human view to ``human`` (the CLI passes stdout as ``human`` when it is a TTY). Every line is
    flushed as it is written: a crash never loses a line already reported as processed."""

    def __init__(self, stream: IO[str] | None, human: IO[str] | None = None):
        self.stream, self.human = stream, human

    def _json(self, record: dict[str, Any]) -> None:
        if self.stream is not None:
            self.stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.stream.flush()

    def event(self, kind: str, payload: dict[str, Any]) -> None:
        """One event line (an order sent, a fill, the kill switch ...): ``{"event": kind, **payload}``."""
        self._json({"event": kind, **payload})

    def start(self, info: dict[str, Any], banner: str) -> None:
        """The first line says where the candles come from (e.g. SYNTHETIC) and what runs."""
        self._json({"event": "start", "wall": _stamp(), **info})
        print(banner, file=self.human or sys.stderr, flush=True)

    def info(self, text: str) -> None:
        print(text, file=self.human or sys.stderr, flush=True)

    def emit(self, record: dict[str, Any]) -> None:
        self._json({"event": "candle", **record})
        if self.human is not None:
            probs = record["probs"]
            if probs is not None:
                shown = f"L {probs[0]:.2f} S {probs[1]:.2f} H {probs[2]:.2f}"
            elif record.get("pred") is not None:
                shown = f"return {record['pred']:+.4%}"
            else:
                shown = "warming up"
            print(
                f"{record['time']}  close {record['close']:>12.2f}  {shown:<22} signal {record['signal']:+d}  "
                f"pos {record['position']:+.6g}  equity {record['equity']:.2f}  "
                f"model {record['latency_us']['model']:.0f} µs",
                file=self.human,
                flush=True,
            )

    def heartbeat(self, fields: dict[str, Any]) -> None:
        self._json({"event": "heartbeat", "wall": _stamp(), **fields})

    def summary(self, latency: LatencyStats, extra: dict[str, Any]) -> None:
        self._json({"event": "summary", "wall": _stamp(), "latency_us": latency.summary(), **extra})
        self.info("latency per closed candle (µs):\n" + latency.table())

    def flush(self) -> None:
        for stream in (self.stream, self.human):
            if stream is not None:
                stream.flush()


@dataclass
class LiveContext:
    """What :func:`run_live` needs besides the engine: where durable state goes and how to backfill."""

    symbol: str
    interval: str
    interval_ms: int
    backfill: Callable[[int, int], Candles] | None = None  # (first_missing_ms, before_ms) -> closed candles
    store: LiveStore | None = None  # committed once per candle (see live/state.py)
    max_bars: int | None = None  # stop after this many processed candles (tests, benchmarks)
    # Called for the newest candle of each feed step (never a backfilled one), before its commit, e.g. to
    # mirror the paper intent to real orders; the (kind, payload) events it returns are committed in the
    # candle's transaction (an exception with an ``events`` attribute is raised after that commit).
    after_candle: Callable[[LiveEngine], list[tuple[str, dict]] | None] | None = None
    extra_state: Callable[[], dict] | None = None  # merged into the snapshot's scalars (order mirror)
    metrics: LiveMetrics | None = None
    heartbeat_s: float | None = None  # a heartbeat record at most this often (None: never)


async def in_thread(fn: Callable[..., Any], *args) -> Any:
    """``fn(*args)`` in a daemon thread, awaited. Unlike ``asyncio.to_thread`` an abandoned call (a slow
    REST backfill when SIGTERM arrives) never holds up the process exit: the loop just stops waiting."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(exc: BaseException | None, result: Any) -> None:
        if future.done():  # the awaiting task was cancelled (stop signal): nobody wants the result
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def runner() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task as is
            result, error = None, exc
        else:
            error = None
        with contextlib.suppress(RuntimeError):  # the loop is gone: the call was abandoned at shutdown
            loop.call_soon_threadsafe(settle, error, result)

    threading.Thread(target=runner, daemon=True, name=f"live-{getattr(fn, '__name__', 'call')}").start()
    return await future


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    """The event loop's default executor during :func:`run_live`: every ``asyncio.to_thread`` call (e.g.
    inside the data clients) runs in a daemon thread, so a hung REST call cannot hold the process past a
    stop signal (the standard pool joins its threads at exit). A ThreadPoolExecutor only because asyncio
    insists on one; no pool thread is ever started."""

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()

        def runner() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the waiting side as is
                future.set_exception(exc)

        threading.Thread(target=runner, daemon=True, name="live-executor").start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None  # abandoned calls are daemon threads: nothing to wait for


async def next_or_stop(next_task: asyncio.Future, stop: asyncio.Event, wait_s: float | None) -> str:
    """Wait at most ``wait_s`` for the source's next item (``next_task``) or ``stop``: ``"stop"``
    (``next_task`` cancelled), ``"timeout"`` (still pending) or ``"ready"``."""
    stop_task = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({next_task, stop_task}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    if stop.is_set():
        next_task.cancel()
        return "stop"
    return "ready" if next_task in done else "timeout"


async def run_live(
    engine: LiveEngine, source: AsyncIterator[Candle], ctx: LiveContext, sink: OutputSink
) -> int:
    """Drive ``engine`` from ``source`` until it ends, ``max_bars`` is reached or SIGINT/SIGTERM arrives.
    Every processed candle is committed to ``ctx.store`` before the next one is taken. Returns the number
    of candles processed."""
    warm = getattr(engine, "warm_jit", None)
    if warm is not None:  # before the feed's first candle, not on it
        log.info("jitted broker code ready in %.3f s", warm())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(DaemonExecutor())
    installed = []
    for sig in (os_signal.SIGINT, os_signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    processed = 0
    metrics = ctx.metrics
    last_beat = time.monotonic()
    source_iter = aiter(source)

    async def until_stopped(awaitable):
        """``(done, result)``: the awaitable's result, or ``(False, None)`` when a stop signal came first
        (the awaitable is then cancelled, or for a thread, abandoned)."""
        task = asyncio.ensure_future(awaitable)
        stop_task = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if task not in done:
            task.cancel()
            return False, None
        return True, task.result()

    def beat() -> None:
        nonlocal last_beat
        last_beat = time.monotonic()
        sink.heartbeat(
            {
                "last_start_ms": engine.last_start_ms,
                "processed": processed,
                "position": engine.broker.position,
                "equity": engine.broker.equity,
                **(metrics.as_dict() if metrics is not None else {}),
            }
        )

    next_task = None
    try:
        while not stop.is_set():
            # Wait for the next candle, stopping at once on a signal and beating while the feed is quiet
            # (a heartbeat says the process is alive even when the market sends nothing).
            wait_s = None
            if ctx.heartbeat_s is not None:
                wait_s = max(0.0, last_beat + ctx.heartbeat_s - time.monotonic())
            if next_task is None:
                next_task = asyncio.ensure_future(anext(source_iter))
            outcome = await next_or_stop(next_task, stop, wait_s)
            if outcome == "stop":
                break
            if outcome == "timeout":
                beat()
                continue
            task, next_task = next_task, None
            try:
                candle = task.result()
            except StopAsyncIteration:
                break
            if metrics is not None:
                metrics.feed_lag(candle, ctx.interval_ms)
            got, items = await until_stopped(_fill_gap(engine, candle, ctx))
            if not got:
                break
            batch = [*items, candle]
            for i, item in enumerate(batch):
                found = engine.problem(item)
                if found is not None and found[0] == "jump" and ctx.backfill is not None:
                    ok, refetched = await until_stopped(_refetch(engine, item, ctx))
                    if not ok:
                        break
                    item = refetched if refetched is not None else item
                if not engine.admit(item):
                    if metrics is not None and engine.problem(item)[0] != "stale":
                        metrics.rejected()
                    continue
                record = engine._step(item)
                record["backfilled"] = item is not candle
                events, stopping = [], None
                # Orders follow the newest candle only (never a backfilled one), and before its commit:
                # their events and the mirror's state become durable with the candle, so a crash in
                # between replays the candle, and the order is found by its link id, not sent again.
                if ctx.after_candle is not None and i == len(batch) - 1:
                    try:
                        events = ctx.after_candle(engine) or []
                    except Exception as exc:
                        if getattr(exc, "events", None) is None:
                            raise
                        events, stopping = exc.events, exc  # e.g. the kill switch: commit, then stop
                if ctx.store is not None:
                    t0 = time.perf_counter_ns()
                    snapshot = engine.snapshot()
                    if ctx.extra_state is not None:
                        snapshot["scalars"].update(ctx.extra_state())
                    ctx.store.commit(record, snapshot, events)
                    # The durability cost per candle (snapshot + one fsynced transaction), reported apart:
                    # the record itself is already committed.
                    engine.latency.add("commit", (time.perf_counter_ns() - t0) / 1e3)
                sink.emit(record)
                for kind, payload in events:
                    sink.event(kind, payload)
                processed += 1
                if metrics is not None:
                    metrics.candle(record)
                if stopping is not None:
                    raise stopping
            if ctx.heartbeat_s is not None and time.monotonic() - last_beat >= ctx.heartbeat_s:
                beat()
            if ctx.max_bars is not None and processed >= ctx.max_bars:
                break
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(source_iter.aclose(), timeout=1.0)
        sink.flush()
        if ctx.store is not None and engine.last_start_ms is not None:
            sink.info(
                f"state committed to {ctx.store.path} through {format_ms(engine.last_start_ms)} (resume with --resume)"
            )
    return processed


async def _refetch(engine: LiveEngine, candle: Candle, ctx: LiveContext) -> Candle | None:
    """A candle that jumped too far, fetched again through REST: the exchange's record of it, or None."""
    try:
        fetched = await in_thread(ctx.backfill, candle.start_ms, candle.start_ms)
    except Exception as exc:
        log.error("refetch of %s failed (%s)", format_ms(candle.start_ms), exc)
        return None
    same = [c for c in fetched if c.start_ms == candle.start_ms]
    if same:
        log.warning(
            "candle %s refetched through REST: close %g (stream said %g)",
            format_ms(candle.start_ms),
            same[0].close,
            candle.close,
        )
    return same[0] if same else None


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
        # In a thread, so a WebSocket keeps answering pings while REST is slow, and SIGTERM is heard.
        fetched = await in_thread(ctx.backfill, first_missing, candle.start_ms - 1)
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
