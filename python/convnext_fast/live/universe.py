"""Live for N symbols: one feed of ``(symbol, closed candle)``, one batched model call per bar.

Each symbol keeps its own :class:`~convnext_fast.live.loop.LiveEngine` (streaming features, window,
candle hygiene, decision policy, paper broker); :class:`UniverseEngine` pushes the features of every symbol
whose candle of a bar closed, stacks the ready windows into one ``[k, C, T]`` array and makes ONE predictor
call for them, then lets each engine decide and fill. The brokers are independent per symbol: the
``sizing="symbol"`` mode of :func:`~convnext_fast.trading.portfolio.run_portfolio` (a position is a fraction
of the capital plus that symbol's own P&L, isolated margin). The portfolio equity reported is the backtest's
``equity`` of that mode: ``capital + Σ symbol P&L``. The shared-capital ``sizing="portfolio"`` book is not
live yet.

Bars: :func:`run_universe` gathers the candles of one bar time and processes them together once every
symbol delivered it, once a later bar's candle arrives, or ``grace_s`` after the bar's first candle,
whichever comes first; a late candle is then processed on its own (no candle is lost or processed twice:
each engine rejects a duplicate or older candle). Every processed bar is one transaction in the
:class:`UniverseStore` (every symbol's record and engine state), so ``kill -9`` loses at most the bar in
flight and ``--resume`` continues every symbol where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal as os_signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.candles import Candle, Candles, format_ms
from ..errors import UserError
from .latency import LatencyStats
from .loop import DaemonExecutor, LiveEngine, OutputSink, next_or_stop
from .state import ENGINE_COLUMNS, IDENTITY_KEYS, STATE_VERSION, LiveState, LiveStore, engine_row

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS u_candles (
    symbol TEXT NOT NULL, start_ms INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (symbol, start_ms)
);
CREATE TABLE IF NOT EXISTS u_engines (
    symbol TEXT PRIMARY KEY,
{ENGINE_COLUMNS}
);
"""


class UniverseEngine:
    """N :class:`LiveEngine` objects (``engines``: symbol → engine, each with its own paper broker) and one
    ``predict_batch(x [k, C, T]) -> outputs [k, K]`` for all of them."""

    def __init__(self, engines: dict[str, LiveEngine], predict_batch: Callable[[np.ndarray], np.ndarray]):
        if not engines:
            raise UserError("a universe needs at least one symbol")
        self.engines = dict(engines)
        self.symbols = tuple(self.engines)
        self.predict_batch = predict_batch
        first = next(iter(self.engines.values()))
        self._x = np.zeros((len(self.engines), first.ring.n_channels, first.ring.window), dtype=np.float32)
        self.latency = LatencyStats()
        self.model_calls = 0

    @property
    def history_needed(self) -> int:
        return max(e.history_needed for e in self.engines.values())

    def initial_equity(self) -> float:
        return float(next(iter(self.engines.values())).broker.config.initial_equity)

    def portfolio_equity(self) -> float:
        """``capital + Σ (symbol equity − capital)``: run_portfolio's equity for sizing="symbol"."""
        base = self.initial_equity()
        return base + sum(e.broker.equity - base for e in self.engines.values())

    def step_bar(self, candles: list[tuple[str, Candle]]) -> list[tuple[str, dict[str, Any]]]:
        """Process the closed candles of one bar (at most one per symbol): ``[(symbol, record)]`` for those
        admitted (a rejected candle is logged by its engine and skipped), with one model call for all the
        symbols whose window is ready."""
        t0 = time.perf_counter_ns()
        admitted = []
        for symbol, candle in candles:
            engine = self.engines[symbol]
            if engine.admit(candle):
                engine._push_features(candle)
                admitted.append((symbol, engine, candle))
        if not admitted:
            return []
        t1 = time.perf_counter_ns()
        ready = [i for i, (_, engine, _) in enumerate(admitted) if engine.ready]
        outputs: dict[int, np.ndarray] = {}
        if ready:
            x = self._x[: len(ready)]
            for row, i in enumerate(ready):
                x[row] = admitted[i][1].ring.view()
            out = self.predict_batch(x)  # the one model call of this bar
            self.model_calls += 1
            outputs = {i: out[row] for row, i in enumerate(ready)}
        t2 = time.perf_counter_ns()
        records = []
        for i, (symbol, engine, candle) in enumerate(admitted):
            record = engine._decide(candle, outputs.get(i), t0, t1, t2)
            record["symbol"] = symbol
            records.append((symbol, record))
        t3 = time.perf_counter_ns()
        if ready:  # per bar, not per symbol: the batch is the unit of work
            self.latency.add_many(
                {
                    "features": (t1 - t0) / 1e3,
                    "model": (t2 - t1) / 1e3,
                    "decision": (t3 - t2) / 1e3,
                    "total": (t3 - t0) / 1e3,
                }
            )
        return records


class UniverseStore(LiveStore):
    """The ``--state`` SQLite file of a universe: per symbol its candle records and engine state, one
    transaction per bar (:meth:`commit_bar`). Same file format family as :class:`LiveStore` (its meta table
    holds the identity, with ``symbols`` instead of ``symbol``)."""

    def __init__(self, path, durability: str = "fsync"):
        super().__init__(path, durability)
        self.db.executescript(_SCHEMA)

    def _n_engines(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM u_engines").fetchone()[0])

    def start_new(self, identity: dict, overwrite: bool = False) -> None:
        if (self._n_engines() or self.load() is not None) and not overwrite:
            raise UserError(
                f"--state {self.path} already holds a run; continue it with --resume, pick another --state "
                "or overwrite it with --force"
            )
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for table in ("meta", "candles", "events", "engine", "u_candles", "u_engines"):
                self.db.execute(f"DELETE FROM {table}")
            rows = [("version", STATE_VERSION), ("identity", identity)]
            self.db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows])

    def check_resume_universe(self, identity: dict, force: bool = False) -> dict[str, LiveState]:
        """Every symbol's saved state, after checking the file was written by this run setup."""
        stored = self._meta()
        states = self.load_universe()
        if not states:
            raise UserError(f"--resume: {self.path} holds no processed candle of a universe to continue from")
        saved = stored.get("identity", {})
        keys = (*(k for k in IDENTITY_KEYS if k != "symbol"), "symbols")
        differ = [k for k in keys if saved.get(k) != identity.get(k)]
        if "symbols" in differ:  # another universe cannot be forced onto this state: symbols would be lost
            raise UserError(
                f"--resume: {self.path} trades {saved.get('symbols')}, not {identity.get('symbols')}"
            )
        if differ and not force:
            what = "; ".join(f"{k} {saved.get(k)!r} ≠ {identity.get(k)!r}" for k in differ)
            raise UserError(f"--resume: {self.path} was written by another run ({what}); --force overrides")
        return states

    def commit_bar(self, items: list[tuple[str, dict, dict]]) -> None:
        """``[(symbol, record, engine snapshot)]`` of one bar in ONE transaction: every symbol's candle and
        state become durable together, or none of them."""
        db = self.db
        db.execute("BEGIN")
        try:
            for symbol, record, eng in items:
                db.execute(
                    "INSERT INTO u_candles VALUES (?, ?, ?)",
                    (symbol, int(record["start_ms"]), json.dumps(record, separators=(",", ":"))),
                )
                db.execute(
                    "INSERT OR REPLACE INTO u_engines VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (symbol, *engine_row(eng)),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def load_universe(self) -> dict[str, LiveState]:
        interval = self._meta().get("identity", {}).get("interval", "")
        rows = self.db.execute(
            "SELECT symbol, last_start_ms, bars_processed, broker, scalars, features, ring FROM u_engines"
        )
        return {
            s: LiveState(
                s,
                interval,
                int(last),
                json.loads(broker),
                int(bars),
                {"scalars": json.loads(scalars), "features": bytes(feat), "ring": bytes(ring)},
            )
            for s, last, bars, broker, scalars, feat, ring in rows
        }

    def universe_records(self, symbol: str | None = None) -> list[dict]:
        """Committed candle records (of ``symbol``, else all), in commit order."""
        sql = "SELECT record FROM u_candles" + (" WHERE symbol = ?" if symbol else "") + " ORDER BY rowid"
        return [json.loads(r[0]) for r in self.db.execute(sql, (symbol,) if symbol else ())]


async def replay_universe(
    series: dict[str, Candles], *, interval_ms: int, speed: float | None = None
) -> AsyncIterator[tuple[str, Candle]]:
    """``(symbol, candle)`` of several stored series in time order (symbols in their given order within a
    bar); ``speed`` as in :func:`~convnext_fast.live.sources.replay` (one pause per bar)."""
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0 (or None for full speed), got {speed}")
    pause = None if speed is None else interval_ms / 1000.0 / speed
    pos = {s: 0 for s in series}
    bars = 0
    while True:
        live = [s for s in series if pos[s] < len(series[s])]
        if not live:
            return
        t = min(int(series[s].start_ms[pos[s]]) for s in live)
        if pause is not None:
            await asyncio.sleep(pause)
        elif bars % 64 == 0:
            await asyncio.sleep(0)  # a full-speed replay still hears SIGINT
        bars += 1
        for s in live:
            if int(series[s].start_ms[pos[s]]) == t:
                yield s, series[s][pos[s]]
                pos[s] += 1


@dataclass
class UniverseContext:
    interval_ms: int
    store: UniverseStore | None = None
    max_bars: int | None = None  # stop after this many processed bars (tests, benchmarks)
    grace_s: float = 5.0  # how long a bar waits for its missing symbols before it goes without them


async def run_universe(
    engine: UniverseEngine, source: AsyncIterator[tuple[str, Candle]], ctx: UniverseContext, sink: OutputSink
) -> int:
    """Drive ``engine`` until the source ends, ``max_bars`` bars are processed or SIGINT/SIGTERM. Returns
    the number of bars processed (each one batched model call at most and one store transaction)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(DaemonExecutor())
    installed = []
    for sig in (os_signal.SIGINT, os_signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    n_sym = len(engine.symbols)
    pending: dict[int, dict[str, Candle]] = {}  # bar start → the candles of it received so far
    deadline: dict[int, float] = {}
    bars = 0
    source_iter = aiter(source)

    def flush(upto: int | None) -> bool:
        """Process the pending bars starting at or before ``upto`` (all when None), oldest first; True
        when ``max_bars`` is reached."""
        nonlocal bars
        for t in sorted(pending):
            if upto is not None and t > upto:
                break
            got = pending.pop(t)
            deadline.pop(t, None)
            records = engine.step_bar([(s, got[s]) for s in engine.symbols if s in got])
            if not records:
                continue
            if ctx.store is not None:
                t0 = time.perf_counter_ns()
                ctx.store.commit_bar([(s, r, engine.engines[s].snapshot()) for s, r in records])
                engine.latency.add("commit", (time.perf_counter_ns() - t0) / 1e3)
            for _, record in records:
                sink.emit(record)
            bars += 1
            if ctx.max_bars is not None and bars >= ctx.max_bars:
                return True
        return False

    next_task = None
    try:
        while not stop.is_set():
            wait_s = None
            if deadline:
                wait_s = max(0.0, min(deadline.values()) - time.monotonic())
            if next_task is None:
                next_task = asyncio.ensure_future(anext(source_iter))
            outcome = await next_or_stop(next_task, stop, wait_s)
            if outcome == "stop":
                break
            if outcome == "timeout":  # grace over: the late symbols' candles go in a later batch
                late = [t for t, d in deadline.items() if d <= time.monotonic()]
                if flush(max(late)):
                    break
                continue
            task, next_task = next_task, None
            try:
                symbol, candle = task.result()
            except StopAsyncIteration:
                flush(None)
                break
            if symbol not in engine.engines:
                continue
            t = int(candle.start_ms)
            # A later bar's candle: every earlier bar is as complete as it will get in order.
            if flush(t - 1):
                break
            if t in pending and symbol in pending[t]:
                continue  # the same candle twice from the feed: the first one stands
            pending.setdefault(t, {})[symbol] = candle
            deadline.setdefault(t, time.monotonic() + ctx.grace_s)
            if len(pending[t]) == n_sym and flush(t):
                break
    finally:
        if next_task is not None:
            next_task.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(source_iter.aclose(), timeout=1.0)
        sink.flush()
    return bars


def bars_table(records: list[dict], symbols: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """Per symbol, the arrays of its records (start_ms, signal, size, position, equity): what a test or a
    report compares with the portfolio backtest."""
    out = {}
    for s in symbols:
        rows = [r for r in records if r.get("symbol") == s]
        out[s] = {
            "start_ms": np.array([r["start_ms"] for r in rows], dtype=np.int64),
            **{
                k: np.array([r[k] for r in rows], dtype=np.float64)
                for k in ("signal", "size", "position", "equity")
            },
        }
    return out


def format_start(symbols, last: dict[str, int]) -> str:
    return ", ".join(f"{s} {format_ms(last[s])}" for s in symbols if s in last)


# ---- CLI: ``live --symbols A,B,C`` ---------------------------------------------------------------------
def parse_symbols(text: str) -> list[str]:
    symbols = [s.strip().upper() for s in text.split(",") if s.strip()]
    if not symbols:
        raise UserError(f"--symbols needs comma-separated symbols, got {text!r}")
    if len(set(symbols)) != len(symbols):
        raise UserError(f"--symbols names a symbol twice: {text!r}")
    return symbols


@dataclass
class UniverseFeed:
    label: str
    kind: str
    dataset: str
    history: dict[str, Candles]  # seed candles per symbol (empty on a resume)
    stream: object  # async iterator of (symbol, Candle)


def _cut_replay(
    args, symbols, series: dict[str, Candles], engine: UniverseEngine, meta, saved
) -> UniverseFeed:
    from ..data.candles import interval_to_ms
    from ..trading.traded_bars import first_traded_ms

    history, rest = {}, {}
    start_ms = None
    if saved is None:
        start_ms, _ = first_traded_ms(args.start, meta if args.checkpoint else None)
    for s in symbols:
        c = series[s]
        if saved is not None:
            cut = int(np.searchsorted(c.start_ms, saved[s].last_start_ms, side="right"))
        elif start_ms is None:
            cut = engine.history_needed
        else:
            cut = max(int(np.searchsorted(c.start_ms, start_ms)), 1)
        if cut >= len(c):
            raise UserError(f"{s}: the data has {len(c)} candles; nothing left to stream after {cut}")
        history[s] = c[:cut] if saved is None else c[:0]
        rest[s] = c[cut:]
    stream = replay_universe(rest, interval_ms=interval_to_ms(args.interval), speed=args.speed)
    return UniverseFeed("", "", "", history, stream)


def _universe_feed(args, symbols, engine: UniverseEngine, meta, saved) -> UniverseFeed:
    from ..data.candles import interval_to_ms
    from ..data.synthetic import synthetic_candles
    from .startup import SYNTHETIC_BANNER, series_digest

    kind = args.source if args.source != "auto" else ("replay" if args.data else "synthetic")
    if kind in ("ws", "rest"):
        return _online_universe_feed(args, symbols, engine, saved, kind)
    if kind == "replay":
        if not args.data:
            raise UserError("--source replay needs --data <candle-store folder>")
        from ..train.inputs import load_candles

        series = {s: load_candles(args.data, s, args.interval, args.category) for s in symbols}
        label = f"replay of {args.data} ({len(symbols)} symbols)"
    else:
        # No correlated SYNTHETIC universe on this branch: independent series, one seed per symbol.
        n = max(args.bars, engine.history_needed + 1)
        step = interval_to_ms(args.interval)
        series = {
            s: synthetic_candles(n, seed=args.seed + i, interval_ms=step) for i, s in enumerate(symbols)
        }
        label = (
            f"{SYNTHETIC_BANNER} ({len(symbols)} symbols, seeds {args.seed}..{args.seed + len(symbols) - 1})"
        )
        kind = "synthetic"
    feed = _cut_replay(args, symbols, series, engine, meta, saved)
    feed.label, feed.kind = label, kind
    feed.dataset = "; ".join(f"{s}: {series_digest(series[s])}" for s in symbols)
    return feed


def _online_universe_feed(args, symbols, engine: UniverseEngine, saved, kind) -> UniverseFeed:
    from ..data.bybit import BybitClient
    from ..data.bybit_ws import stream_klines_many
    from ..data.candles import interval_to_ms

    if kind == "rest":
        raise UserError("--symbols streams over the WebSocket only (--source ws or replay/synthetic)")
    step = interval_to_ms(args.interval)
    client = BybitClient(args.base_url, args.ws_url, args.category, progress=False)
    now_ms = int(client.server_time_ms())
    last_closed = (now_ms // step - 1) * step
    history, since = {}, {}
    for s in symbols:
        if saved is None:
            one = next(iter(engine.engines.values()))
            need = one.features.spec.history_bars(args.history_tol) + one.ring.window + 8
            history[s] = client.fetch_klines(s, args.interval, last_closed - (need - 1) * step, last_closed)
            if not len(history[s]):
                raise UserError(f"Bybit returned no history for {s} {args.interval}")
            since[s] = int(history[s].start_ms[-1]) + step
        else:
            history[s] = Candles.from_rows([])
            since[s] = saved[s].last_start_ms + step
    stream = stream_klines_many(client, symbols, args.interval, since_ms=since)
    label = (
        f"Bybit {args.category} {','.join(symbols)} {args.interval} (one WebSocket, {len(symbols)} topics)"
    )
    return UniverseFeed(label, "bybit", f"bybit {args.category} {args.base_url}", history, stream)


def _reconcile_universe_out(path, store: UniverseStore) -> list[dict]:
    """Committed records that ``--out`` lacks (a kill between commit and write); a torn last line is cut."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        return store.universe_records()
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
    seen = set()
    for line in data[:keep].splitlines():
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if rec.get("event") == "candle":
                seen.add((rec.get("symbol"), rec["start_ms"]))
    return [r for r in store.universe_records() if (r["symbol"], r["start_ms"]) not in seen]


def run_cli(args) -> int:
    """``live --symbols A,B,C``: the universe counterpart of :func:`convnext_fast.live.cli.run`."""
    import sys
    from pathlib import Path

    from ..data.candles import interval_to_ms
    from ..trading.backtest import config_from_args
    from ..trading.broker import PaperBroker
    from .predictor import make_predictor
    from .session import DecisionRule, build_engine
    from .startup import load_model, setup_logging

    setup_logging(args.verbose)
    started = time.perf_counter()
    symbols = parse_symbols(args.symbols)
    for option, plain in (("orders", False), ("sizing", "fixed"), ("funding", None)):
        if getattr(args, option, plain) not in (plain, None):
            raise UserError(
                f"--symbols runs paper brokers with a fixed --size, no funding; --{option} is single-symbol only"
            )
    if args.resume and not Path(args.state).is_file():
        raise UserError(f"--resume: state file {args.state} does not exist")
    config = config_from_args(args)
    model, meta, model_label, model_id = load_model(args)
    from ..trading.threshold import resolve_threshold

    tau, _ = resolve_threshold(args.threshold, meta if args.checkpoint else None, model_label)
    rule = DecisionRule(tau, args.size)
    engines, backend = {}, ""
    for s in symbols:
        engines[s], backend = build_engine(
            model, meta, rule=rule, broker=PaperBroker(config), backend=args.backend, window=args.window,
            max_jump=args.max_jump,
        )  # fmt: skip
    predict_batch, backend = make_predictor(model, args.backend)
    universe = UniverseEngine(engines, predict_batch)
    store = UniverseStore(args.state, args.durability)
    try:
        saved = store.load_universe() if args.resume else None
        if args.resume and not saved:
            raise UserError(
                f"--resume: {args.state} holds no processed candle of a universe to continue from"
            )
        feed = _universe_feed(args, symbols, universe, meta, saved)
        identity = {
            "source": feed.kind,
            "symbols": symbols,
            "interval": args.interval,
            "model": model_id,
            "dataset": feed.dataset,
        }
        seeded = 0
        if saved:
            states = store.check_resume_universe(identity, force=args.force)
            for s, engine in engines.items():
                engine.broker = PaperBroker.from_state(states[s].broker)
                try:
                    engine.restore(states[s].engine, states[s].last_start_ms, states[s].bars_processed)
                except (KeyError, ValueError) as exc:
                    raise UserError(f"--resume: {args.state} cannot seed this model ({exc})") from None
        else:
            store.start_new(identity, overwrite=args.force)
            seeded = min(engines[s].warm_up(feed.history[s]) for s in symbols)
        pending: list[dict] = []
        if args.out:
            if saved:
                pending = _reconcile_universe_out(args.out, store)
            json_out = open(args.out, "a" if saved else "w")
        else:
            json_out = None if sys.stdout.isatty() else sys.stdout
        sink = OutputSink(json_out, None)
        info = {
            "source": feed.label,
            "model": model_label,
            "backend": backend,
            "symbols": symbols,
            "interval": args.interval,
            "window": universe._x.shape[2],
            "seeded_bars": seeded,
            "resumed": bool(saved),
            "sizing": "symbol",
            "startup_s": round(time.perf_counter() - started, 3),
        }
        sink.start(info, f"{feed.label} | {model_label} | backend {backend} | {len(symbols)} symbols")
        for record in pending:
            sink.emit(record)
        ctx = UniverseContext(interval_to_ms(args.interval), store=store, max_bars=args.max_bars)
        try:
            bars = asyncio.run(run_universe(universe, feed.stream, ctx, sink))
            sink.summary(
                universe.latency,
                {
                    "bars": bars,
                    "model_calls": universe.model_calls,
                    "equity": universe.portfolio_equity(),
                    "symbols": {
                        s: {"equity": e.broker.equity, "position": e.broker.position}
                        for s, e in engines.items()
                    },
                },
            )
        finally:
            sink.flush()
            if args.out and json_out is not None:
                json_out.close()
        return 0
    finally:
        store.close()
