"""``convnext-fast live`` / ``python -m convnext_fast.live``: run the live loop.

Source choice (``--source auto``): a replay of ``--data`` when given; else Bybit (WebSocket, REST polling
as fallback) when the network answers; else the embedded SYNTHETIC market, which the first output line
says.
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

from ..data.candles import INTERVALS, Candles, format_ms, interval_to_ms
from ..errors import UserError
from ..variants import VARIANTS
from .predictor import PREDICTOR_BACKENDS

SOURCES = ("auto", "ws", "rest", "replay", "synthetic")
SYNTHETIC_BANNER = "SYNTHETIC market (no network and no --data): generated candles, not a real market"
log = logging.getLogger("convnext_fast.live")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..trading.backtest import add_config_arguments

    src = parser.add_argument_group("candles")
    src.add_argument(
        "--source",
        choices=SOURCES,
        default="auto",
        help="where candles come from (default auto: "
        "--data if given, else Bybit when online, else the SYNTHETIC market)",
    )
    src.add_argument("--data", help="replay this CSV file or candle-store folder")
    src.add_argument(
        "--speed",
        type=float,
        help="replay pace: × real time (e.g. 3600 = one hour candle per second); default full speed",
    )
    src.add_argument("--symbol", default="BTCUSDT", help="Bybit symbol (default BTCUSDT)")
    src.add_argument("--interval", default="60", choices=INTERVALS, help="kline interval (default 60)")
    src.add_argument("--category", default="linear", choices=("spot", "linear", "inverse"))
    src.add_argument("--base-url", default="https://api.bybit.com", help="Bybit REST base URL")
    src.add_argument("--ws-url", default="wss://stream.bybit.com/v5/public/{category}", help="Bybit WS URL")
    src.add_argument("--poll-seconds", type=float, default=5.0, help="REST polling period (fallback source)")
    src.add_argument(
        "--bars", type=int, default=3000, help="SYNTHETIC market length in candles (default 3000)"
    )
    src.add_argument("--seed", type=int, default=0, help="SYNTHETIC market seed (default 0)")

    mdl = parser.add_argument_group("model")
    mdl.add_argument(
        "--checkpoint",
        help="trained checkpoint (convnext-fast train); without it an UNTRAINED "
        "model runs, for plumbing and latency only",
    )
    mdl.add_argument(
        "--variant", default="atto", choices=tuple(VARIANTS), help="untrained model size (default atto)"
    )
    mdl.add_argument("--window", type=int, help="window length T (default: the checkpoint's, else 256)")
    mdl.add_argument("--backend", default="auto", choices=PREDICTOR_BACKENDS, help="force a forward backend")
    mdl.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: one bar at a time does "
        "not gain from intra-op threads on a small CPU)",
    )

    dec = parser.add_argument_group("decisions")
    dec.add_argument("--threshold", type=float, default=0.5, help="confidence threshold τ (default 0.5)")
    dec.add_argument("--size", type=float, default=1.0, help="position notional / equity (default 1)")
    add_config_arguments(dec)  # the backtest's own options: live trades under the same rules

    out = parser.add_argument_group("output and state")
    out.add_argument("--out", help="JSON lines file (default: stdout when it is not a terminal)")
    out.add_argument("--state", default="live_state.json", help="state file written on shutdown")
    out.add_argument(
        "--resume", action="store_true", help="continue from --state (position, equity, last candle)"
    )
    out.add_argument("--max-bars", type=int, help="stop after this many closed candles")
    out.add_argument("--verbose", action="store_true", help="log every ignored candle")

    from .order_cli import add_order_arguments, add_sizing_and_funding_arguments

    add_sizing_and_funding_arguments(parser)
    add_order_arguments(parser)


@dataclass
class Feed:
    """Where the loop's candles come from: seed history, then a stream, plus a REST backfill if any."""

    label: str
    history: Candles
    stream: object  # async iterator of Candle
    backfill: object = None


def _model(args):
    from .predictor import set_threads

    set_threads(args.threads)
    if args.checkpoint:
        from ..train import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint, fused=False)
        return model, meta, f"checkpoint {args.checkpoint}"
    from .. import reference
    from ..features.pipeline import FeatureSpec

    spec = FeatureSpec()
    model = reference.create(args.variant, in_chans=spec.n_channels).eval()
    meta = {"feature_spec": spec.to_dict(), "window": args.window}
    return model, meta, f"UNTRAINED {args.variant} (random weights: plumbing and latency only)"


def _split_replay(candles: Candles, need: int, resume_after: int | None) -> tuple[Candles, Candles]:
    cut = need if resume_after is None else int(np.searchsorted(candles.start_ms, resume_after, side="right"))
    if cut >= len(candles):
        raise UserError(
            f"the data has {len(candles)} candles; nothing left to stream after {cut} for warm-up/resume"
        )
    return candles[max(0, cut - need) : cut], candles[cut:]


def _replay_feed(args, label: str, candles: Candles, need: int, resume_after: int | None) -> Feed:
    from .sources import replay

    history, stream = _split_replay(candles, need, resume_after)
    return Feed(label, history, replay(stream, interval_ms=interval_to_ms(args.interval), speed=args.speed))


def _online_feed(args, need: int, resume_after: int | None, kind: str, probing: bool) -> Feed:
    from ..data.bybit import BybitClient, RetryPolicy
    from .sources import rest_polling, websocket_with_fallback

    step = interval_to_ms(args.interval)
    # When only probing whether we are online, fail fast; once connected, retry patiently.
    probe = RetryPolicy(max_retries=1, base_delay=0.2) if probing else RetryPolicy()
    client = BybitClient(args.base_url, args.ws_url, args.category, progress=False, retry=probe)
    now_ms = int(time.time() * 1000)
    since = (
        now_ms - (need + 2) * step
        if resume_after is None
        else min(resume_after - need * step, now_ms - need * step)
    )
    history = client.fetch_klines(args.symbol, args.interval, since, None)
    client.retry = RetryPolicy()
    if resume_after is not None:
        history = history[: int(np.searchsorted(history.start_ms, resume_after, side="right"))]
    history = history[-need:]
    if not len(history):
        raise UserError(f"Bybit returned no history for {args.symbol} {args.interval}")
    owed = int(history.start_ms[-1]) + step
    if kind == "rest":
        stream = rest_polling(
            client, args.symbol, args.interval, step, since_ms=owed, poll_s=args.poll_seconds
        )
    else:
        stream = websocket_with_fallback(
            client, args.symbol, args.interval, step, since_ms=owed, poll_s=args.poll_seconds
        )
    label = f"Bybit {args.category} {args.symbol} {args.interval} ({'REST polling' if kind == 'rest' else 'WebSocket'})"
    return Feed(label, history, stream, lambda s, e: client.fetch_klines(args.symbol, args.interval, s, e))


def _feed(args, need: int, resume_after: int | None) -> Feed:
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
        return _replay_feed(args, f"replay of {args.data}", candles, need, resume_after)
    if kind in ("online", "ws", "rest"):
        try:
            return _online_feed(
                args, need, resume_after, "rest" if kind == "rest" else "ws", probing=kind == "online"
            )
        except BybitRetriesExhausted as exc:  # unreachable; a refusal (unknown symbol ...) still raises
            if kind != "online":
                raise
            log.info("Bybit unreachable (%s); the SYNTHETIC market it is", exc)
    candles = synthetic_candles(
        max(args.bars, need + 1), seed=args.seed, interval_ms=interval_to_ms(args.interval)
    )
    return _replay_feed(args, SYNTHETIC_BANNER, candles, need, resume_after)


def _order_hook(args, broker_config):
    from .order_cli import order_hook

    return order_hook(args, broker_config)


def run(args: argparse.Namespace) -> int:
    from ..trading.backtest import config_from_args
    from ..trading.broker import PaperBroker
    from .loop import LiveContext, OutputSink, run_live
    from .session import DecisionRule, build_engine
    from .state import load_state

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    started = time.perf_counter()
    state = load_state(args.state) if args.resume else None
    if state is not None and (state.symbol, state.interval) != (args.symbol, args.interval):
        raise UserError(
            f"--resume: {args.state} is for {state.symbol} {state.interval}, not {args.symbol} {args.interval}"
        )
    config = config_from_args(args)
    after_candle = _order_hook(args, config)  # before any slow work: a bad order setup fails at once
    broker = PaperBroker.from_state(state.broker) if state else PaperBroker(config)
    model, meta, model_label = _model(args)
    engine, backend = build_engine(
        model,
        meta,
        rule=DecisionRule(args.threshold, args.size),
        broker=broker,
        backend=args.backend,
        window=args.window,
    )
    feed = _feed(args, engine.history_needed, state.last_start_ms if state else None)
    seeded = engine.warm_up(feed.history)
    from .order_cli import attach_sizing_and_funding

    rules = attach_sizing_and_funding(
        args, engine, config, feed.history, synthetic=feed.label == SYNTHETIC_BANNER
    )
    if state is not None:
        engine.bars_processed = state.bars_processed

    json_out = (
        open(args.out, "a" if args.resume else "w")
        if args.out
        else (None if sys.stdout.isatty() else sys.stdout)
    )
    sink = OutputSink(json_out, sys.stdout if sys.stdout.isatty() else None)
    info = {
        "source": feed.label,
        "model": model_label,
        "backend": backend,
        "symbol": args.symbol,
        "interval": args.interval,
        "window": engine.ring.window,
        "seeded_bars": seeded,
        "resumed_from": format_ms(state.last_start_ms) if state else None,
        "startup_s": round(time.perf_counter() - started, 3),
        "rules": rules,
    }
    sink.start(info, f"{feed.label} | {model_label} | backend {backend} | seeded {seeded} candles")
    if after_candle is not None:  # order events go to the same JSON lines
        after_candle.attach(sink._json)
    ctx = LiveContext(
        args.symbol,
        args.interval,
        interval_to_ms(args.interval),
        backfill=feed.backfill,
        state_path=args.state,
        max_bars=args.max_bars,
        after_candle=after_candle,
    )
    try:
        processed = asyncio.run(run_live(engine, feed.stream, ctx, sink))
        sink.summary(
            engine.latency,
            {"bars": processed, "equity": engine.broker.equity, "position": engine.broker.position},
        )
    finally:
        sink.flush()
        if args.out and json_out is not None:
            json_out.close()
    if args.out:
        sink.info(f"{processed} candles → {Path(args.out)}")
    return 0
