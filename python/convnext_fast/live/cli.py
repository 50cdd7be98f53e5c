"""``convnext-fast live`` / ``python -m convnext_fast.live``: run the live loop.

Source choice (``--source auto``): a replay of ``--data`` when given; else Bybit (WebSocket, REST polling
as fallback) when the network answers; else the embedded SYNTHETIC market, which the first output line
says.

Decisions equal the backtest's over the full series from the first live bar on: a replay seeds the
features with every bar before ``--start``; a cold start from the exchange fetches
:meth:`~convnext_fast.features.pipeline.FeatureSpec.history_bars` (+ the window) closed candles first; a
``--resume`` restores the streaming state committed with the last candle (live/state.py).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cli import argtypes, options
from ..data.candles import Candles, format_ms, interval_to_ms
from ..errors import UserError
from .startup import SYNTHETIC_BANNER, load_model, series_digest, setup_logging

SOURCES = ("auto", "ws", "rest", "replay", "synthetic")
log = logging.getLogger("convnext_fast.live")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("candles")
    src.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="where candles come from (default auto: "
        "--data if given, else Bybit when online, else the SYNTHETIC market)",
    )
    options.add(src, "data", help="replay this CSV file or candle-store folder")
    src.add_argument(
        "--speed",
        type=argtypes.positive_float,
        help="replay pace: × real time (e.g. 3600 = one hour candle per second); default full speed",
    )
    options.add(src, "symbol", help="Bybit symbol (or the series in a --data store)")
    options.add(
        src,
        "symbols",
        help="trade several symbols, e.g. BTCUSDT,ETHUSDT: one WebSocket, one batched model call per bar "
        "(live/universe.py; replaces --symbol)",
    )
    options.add(src, "interval", "category", "base_url")
    src.add_argument("--ws-url", default="wss://stream.bybit.com/v5/public/{category}", help="Bybit WS URL")
    src.add_argument(
        "--poll-seconds",
        type=argtypes.positive_float,
        default=5.0,
        help="REST polling period (fallback source)",
    )
    src.add_argument(
        "--bars", type=argtypes.positive_int, default=3000, help="SYNTHETIC market length in candles"
    )
    options.add(src, "seed", help="SYNTHETIC market seed, and the untrained model's weights")
    src.add_argument(
        "--start",
        help="replay: first bar to trade, YYYY-MM-DD[ HH:MM] UTC, epoch ms or 'all' (default: the "
        "checkpoint's out-of-sample test start, else as soon as the window is full); every earlier bar "
        "seeds the features",
    )
    src.add_argument(
        "--max-jump",
        type=argtypes.positive_float,
        default=0.5,
        help="reject (and refetch through REST) a candle whose high or low is further than this fraction "
        "from the previous close (a spike is never traded)",
    )
    src.add_argument(
        "--history-tol",
        type=argtypes.positive_float,
        default=1e-6,
        help="cold start from the exchange: fetch enough history for every feature to be within this "
        "tolerance of its full-history value",
    )

    mdl = parser.add_argument_group("model")
    mdl.add_argument(
        "--checkpoint",
        help="trained checkpoint (convnext-fast train); without it an UNTRAINED "
        "model runs, for plumbing and latency only",
    )
    options.add(mdl, "variant", help="untrained model size (its random weights come from --seed)")
    options.add(mdl, "window", default=None, help="window length T (default: the checkpoint's, else 256)")
    options.add(mdl, "backend", help="force a forward backend (auto: the fastest live one)")
    options.add(
        mdl,
        "threads",
        help="torch threads (one bar at a time does not gain from intra-op threads on a small CPU)",
    )

    dec = parser.add_argument_group("decisions")
    options.add(
        dec,
        "threshold",
        help="confidence threshold τ, or 'auto': the τ the trainer chose on the checkpoint's validation bars",
    )
    options.add(dec, "size")
    options.add_trading_rules(dec)  # the backtest's own options: live trades under the same rules

    out = parser.add_argument_group("output and state")
    out.add_argument(
        "--out", metavar="PATH", help="JSON lines file (default: stdout when it is not a terminal)"
    )
    options.add(out, "state")
    out.add_argument(
        "--durability",
        choices=("fsync", "os"),
        default="fsync",
        help="fsync (default): every committed candle survives a power cut; os: survives any crash of "
        "the process (kill -9), the kernel flushes to disk",
    )
    out.add_argument(
        "--resume",
        action="store_true",
        help="continue from --state (position, equity, features, last candle)",
    )
    out.add_argument(
        "--force",
        action="store_true",
        help="resume a state written by another source/model/dataset, or overwrite one without --resume",
    )
    out.add_argument("--max-bars", type=argtypes.positive_int, help="stop after this many closed candles")
    out.add_argument(
        "--heartbeat-s",
        type=argtypes.non_negative_float,
        default=60.0,
        help="heartbeat JSON record at most this often, in seconds",
    )
    out.add_argument(
        "--metrics-port",
        type=argtypes.int_at_least(0),
        help="serve Prometheus metrics on this port (needs the [live] extra)",
    )
    out.add_argument("--verbose", action="store_true", help="log every ignored candle")

    from .order_cli import add_order_arguments, add_sizing_and_funding_arguments

    add_sizing_and_funding_arguments(parser)
    add_order_arguments(parser)


@dataclass
class Feed:
    """Where the loop's candles come from: seed history, then a stream, plus a REST backfill if any.
    ``kind`` and ``dataset`` identify the data for a resume."""

    label: str
    history: Candles
    stream: object  # async iterator of Candle
    backfill: object = None
    kind: str = "replay"
    dataset: str = ""
    first_ms: int | None = None  # start of the first bar to trade (replays)
    recent: Candles | None = None  # on a resume: the candles before the stream (sizing rules need closes)


def _replay_feed(args, label, kind, candles, engine, meta, resume_after) -> Feed:
    from ..trading.traded_bars import first_traded_ms, trained_until_ms
    from .sources import replay

    if not len(candles):
        raise UserError("the data holds no candles")
    dataset = series_digest(candles)
    step = interval_to_ms(args.interval)
    if resume_after is not None:
        cut = int(np.searchsorted(candles.start_ms, resume_after, side="right"))
        history = candles[:0]
    else:
        start_ms, note = first_traded_ms(args.start, meta if args.checkpoint else None)
        least = engine.history_needed  # the window must fill before the first decision
        cut = least if start_ms is None else max(int(np.searchsorted(candles.start_ms, start_ms)), 1)
        if note:
            log.warning(note)
        history = candles[:cut]
    if cut >= len(candles):
        raise UserError(
            f"the data has {len(candles)} candles; nothing left to stream after {cut} for warm-up/resume"
        )
    trained_until = trained_until_ms(meta) if args.checkpoint else None
    if trained_until is not None and candles.start_ms[cut] <= trained_until:
        log.warning(
            "this replay trades bars from %s, but the checkpoint was trained/selected on bars up to %s: "
            "in-sample results",
            format_ms(int(candles.start_ms[cut])),
            format_ms(trained_until),
        )
    stream = replay(candles[cut:], interval_ms=step, speed=args.speed)
    return Feed(
        label,
        history,
        stream,
        kind=kind,
        dataset=dataset,
        first_ms=int(candles.start_ms[cut]),
        recent=candles[:cut],
    )


def _online_feed(args, engine, resume_after: int | None, kind: str, probing: bool, metrics) -> Feed:
    from ..data.bybit import BybitClient, RetryPolicy
    from .sources import rest_polling, websocket_with_fallback

    step = interval_to_ms(args.interval)
    # When only probing whether we are online, fail fast; once connected, retry patiently.
    probe = RetryPolicy(max_retries=1, base_delay=0.2) if probing else RetryPolicy()
    client = BybitClient(args.base_url, args.ws_url, args.category, progress=False, retry=probe)
    server_time = getattr(client, "server_time_ms", None)  # the exchange's clock when the client has it
    now_ms = int(server_time()) if server_time is not None else int(time.time() * 1000)
    last_closed = (now_ms // step - 1) * step
    if resume_after is None:
        # Enough history for every recursive feature to forget its seed: decisions then equal a backtest
        # over the exchange's full history.
        need = engine.features.spec.history_bars(args.history_tol) + engine.ring.window + 8
        history = client.fetch_klines(
            args.symbol, args.interval, last_closed - (need - 1) * step, last_closed
        )
        if not len(history):
            raise UserError(f"Bybit returned no history for {args.symbol} {args.interval}")
        if len(history) < need:
            log.warning("cold start: Bybit has %d of the %d candles of history wanted", len(history), need)
        owed = int(history.start_ms[-1]) + step
    else:
        # The committed streaming state continues; the stream backfills from the next candle owed.
        client.fetch_klines(args.symbol, args.interval, resume_after, resume_after)  # online check
        history = Candles.from_rows([])
        owed = resume_after + step
    client.retry = RetryPolicy()
    on_reconnect = metrics.reconnected if metrics is not None else None
    from ..data.bybit_ws import StreamStats

    stats = StreamStats()
    if metrics is not None:
        metrics.stream_stats = stats
    if kind == "rest":
        stream = rest_polling(
            client, args.symbol, args.interval, step, since_ms=owed, poll_s=args.poll_seconds
        )
    else:
        stream = websocket_with_fallback(
            client,
            args.symbol,
            args.interval,
            step,
            since_ms=owed,
            poll_s=args.poll_seconds,
            on_reconnect=on_reconnect,
            stats=stats,
        )
    label = f"Bybit {args.category} {args.symbol} {args.interval} ({'REST polling' if kind == 'rest' else 'WebSocket'})"
    return Feed(
        label,
        history,
        stream,
        lambda s, e: client.fetch_klines(args.symbol, args.interval, s, e),
        kind="bybit",
        dataset=f"bybit {args.category} {args.base_url}",
        recent=history,  # a resume restores its features; sizing then starts from the stream (limitation)
    )


def _feed(args, engine, meta, resume_after: int | None, metrics=None) -> Feed:
    from ..data.bybit import BybitRetriesExhausted
    from ..data.synthetic import synthetic_candles

    kind = args.source
    if kind == "auto":
        kind = "replay" if args.data else "online"
    if kind == "replay":
        if not args.data:
            raise UserError("--source replay needs --data <CSV file or candle-store folder>")
        from ..train.inputs import load_candles

        candles = load_candles(args.data, args.symbol, args.interval, args.category)
        return _replay_feed(args, f"replay of {args.data}", "replay", candles, engine, meta, resume_after)
    if kind in ("online", "ws", "rest"):
        try:
            return _online_feed(
                args,
                engine,
                resume_after,
                "rest" if kind == "rest" else "ws",
                probing=kind == "online",
                metrics=metrics,
            )
        except BybitRetriesExhausted as exc:  # unreachable; a refusal (unknown symbol ...) still raises
            if kind != "online":
                raise
            log.info("Bybit unreachable (%s); the SYNTHETIC market it is", exc)
    candles = synthetic_candles(
        max(args.bars, engine.history_needed + 1), seed=args.seed, interval_ms=interval_to_ms(args.interval)
    )
    return _replay_feed(args, SYNTHETIC_BANNER, "synthetic", candles, engine, meta, resume_after)


def _reconcile_out(path: Path, store) -> list[dict]:
    """Make ``--out`` hold every committed candle exactly once before appending: drop a torn last line
    (a kill mid-write) and return the committed records the file lacks (a kill between commit and write)."""
    import json

    if not path.exists():
        return store.records_after(None)
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
    last = None
    for line in data[:keep].splitlines()[::-1]:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "candle":
            last = int(rec["start_ms"])
            break
    return store.records_after(last)


def _order_hook(args, broker_config):
    from .order_cli import order_hook

    return order_hook(args, broker_config)


def _identity(args, feed: Feed, model_id: str) -> dict:
    return {
        "source": feed.kind,
        "symbol": args.symbol,
        "interval": args.interval,
        "model": model_id,
        "dataset": feed.dataset,
    }


def run(args: argparse.Namespace) -> int:
    from ..trading.backtest import config_from_args
    from ..trading.broker import PaperBroker
    from ..trading.threshold import resolve_threshold
    from .metrics import LiveMetrics
    from .session import DecisionRule, build_engine
    from .state import LiveStore

    if getattr(args, "symbols", None):
        from .universe import run_cli

        return run_cli(args)
    setup_logging(args.verbose)
    started = time.perf_counter()
    if args.resume and not Path(args.state).is_file():
        raise UserError(f"--resume: state file {args.state} does not exist")
    config = config_from_args(args)
    after_candle = _order_hook(args, config)  # before any slow work: a bad order setup fails at once
    model, meta, model_label, model_id = load_model(args)
    tau, source = resolve_threshold(args.threshold, meta if args.checkpoint else None, model_label)
    model_label = f"{model_label}, τ {tau:g} ({source})"  # the start line and record say which τ trades
    engine, backend = build_engine(
        model,
        meta,
        rule=DecisionRule(tau, args.size),
        broker=PaperBroker(config),
        backend=args.backend,
        window=args.window,
        max_jump=args.max_jump,
    )
    metrics = LiveMetrics()
    store = LiveStore(args.state, args.durability)
    try:
        saved = store.load() if args.resume else None
        if args.resume and saved is None:
            raise UserError(f"--resume: {args.state} holds no processed candle to continue from")
        feed = _feed(args, engine, meta, saved.last_start_ms if saved else None, metrics)
        identity = _identity(args, feed, model_id)
        if saved is not None:
            state = store.check_resume(identity, force=args.force)
            engine.broker = PaperBroker.from_state(state.broker)
            try:
                engine.restore(state.engine, state.last_start_ms, state.bars_processed)
            except (KeyError, ValueError) as exc:  # e.g. --force onto a model with other features/window
                raise UserError(f"--resume: {args.state} cannot seed this model ({exc})") from None
            seeded = 0
        else:
            store.start_new(identity, overwrite=args.force)
            seeded = engine.warm_up(feed.history)
        if after_candle is not None:
            _resume_orders(args, after_candle, store, saved)
        from .order_cli import attach_sizing_and_funding

        # After the broker is restored or the features seeded: sizing sees every close before the stream.
        rules = attach_sizing_and_funding(
            args,
            engine,
            config,
            feed.history if saved is None else feed.recent,
            synthetic=feed.kind == "synthetic",
        )
        if saved is not None:  # the sizer's closes and the funding schedule continue bit for bit
            engine.restore_hooks(saved.engine)
        return _drive(
            args,
            engine,
            backend,
            feed,
            store,
            metrics,
            saved,
            seeded,
            model_label,
            started,
            after_candle,
            rules,
        )
    finally:
        store.close()


def _resume_orders(args, hook, store, saved) -> None:
    """The order run id lives in the store from the first start on: every orderLinkId of a resumed run is
    the one the crashed process would have used, so an order it sent is found, never sent twice."""
    stored = store.meta("order_run_id")
    mirror = hook.mirror
    if stored is not None and stored != mirror.run_id:
        if args.run_id and not args.force:
            raise UserError(
                f"--run-id {args.run_id} differs from {stored}, the run id of the orders in {args.state}; "
                "--force overrides (orders of the earlier run are then no longer matched)"
            )
        if not args.run_id:
            mirror.run_id = stored
    store.set_meta("order_run_id", mirror.run_id)
    if saved is not None:
        orders = saved.engine["scalars"].get("orders")
        hook.resume(orders, saved.last_start_ms, interval_to_ms(args.interval), force=args.force)


def _drive(
    args, engine, backend, feed, store, metrics, saved, seeded, model_label, started, after_candle, rules
) -> int:
    from .loop import LiveContext, OutputSink, run_live

    pending: list[dict] = []
    if args.out:
        out_path = Path(args.out)
        if saved is not None:
            pending = _reconcile_out(out_path, store)
        json_out = open(out_path, "a" if saved is not None else "w")
    else:
        json_out = None if sys.stdout.isatty() else sys.stdout
    sink = OutputSink(json_out, sys.stdout if sys.stdout.isatty() else None)
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, {"symbol": args.symbol, "interval": args.interval})
    info = {
        "source": feed.label,
        "model": model_label,
        "backend": backend,
        "symbol": args.symbol,
        "interval": args.interval,
        "window": engine.ring.window,
        "seeded_bars": seeded,
        "resumed_from": format_ms(saved.last_start_ms) if saved else None,
        "startup_s": round(time.perf_counter() - started, 3),
        "rules": rules,
    }
    sink.start(info, f"{feed.label} | {model_label} | backend {backend} | seeded {seeded} candles")
    for record in pending:  # committed before a crash but never written to --out
        sink.emit(record)
    ctx = LiveContext(
        args.symbol,
        args.interval,
        interval_to_ms(args.interval),
        backfill=feed.backfill,
        store=store,
        max_bars=args.max_bars,
        after_candle=after_candle,
        extra_state=None if after_candle is None else lambda: {"orders": after_candle.state()},
        metrics=metrics,
        heartbeat_s=args.heartbeat_s,
    )
    processed = 0
    try:
        processed = asyncio.run(run_live(engine, feed.stream, ctx, sink))
        sink.summary(
            engine.latency,
            {
                "bars": processed,
                "equity": engine.broker.equity,
                "position": engine.broker.position,
                "metrics": metrics.as_dict(),
            },
        )
    finally:
        sink.flush()
        if args.out and json_out is not None:
            json_out.close()
    if args.out:
        sink.info(f"{processed} candles → {Path(args.out)}")
    return 0
