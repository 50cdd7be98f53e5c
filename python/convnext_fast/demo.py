"""``convnext-fast demo``: the main job, end to end on one machine.

data (``--data`` CSV/store, ``--fetch`` from Bybit, else the SYNTHETIC market) → features → train atto with
walk-forward validation → backtest the held-out last part → HTML report with plots → live replay of that
same part through ``python -m convnext_fast.live`` → a summary table, including whether the live loop made
the backtest's decisions bar for bar. ``--quick`` is the reduced CI mode.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .cli import argtypes, options
from .demo_summary import _fmt, baseline_accuracy_row
from .errors import UserError

if TYPE_CHECKING:
    from .train.checkpoint import CheckpointMeta

SYNTHETIC_TAG = "SYNTHETIC"


@dataclass(frozen=True)
class DemoSize:
    bars: int  # SYNTHETIC market length
    holdout: int  # newest bars kept out of training: backtest + live replay
    window: int
    epochs: int
    folds: int
    max_windows: int
    batch_size: int


FULL = DemoSize(bars=8_000, holdout=800, window=128, epochs=3, folds=3, max_windows=3_000, batch_size=64)
QUICK = DemoSize(bars=2_400, holdout=150, window=64, epochs=1, folds=2, max_windows=900, batch_size=64)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add(parser, "data", help="candles: a CSV file or candle-store folder (default: SYNTHETIC market)")
    parser.add_argument(
        "--fetch", action="store_true", help="fetch recent Bybit candles instead (needs network)"
    )
    options.add(parser, "symbol", help="symbol for --fetch / a candle-store folder")
    options.add(parser, "interval", help="kline interval for --fetch / a candle-store folder")
    options.add(
        parser,
        "out",
        default=f"{options.RUNS}/demo",
        help=f"output folder (default {options.RUNS}/demo, git-ignored)",
    )
    parser.add_argument("--quick", action="store_true", help="reduced sizes for CI (about a minute)")
    parser.add_argument(
        "--last",
        type=argtypes.int_at_least(2),
        help="use only the newest N candles of --data (default: all in full mode, 2400 with --quick)",
    )
    options.add(
        parser,
        "threshold",
        default="auto",
        help="confidence threshold τ, or 'auto' (default): the τ the trainer chose on the validation bars of "
        "the fold whose model is traded",
    )
    # One thread by default: on the shared 2-core box a second intra-op thread made training 5-10x slower
    # (7 vs 70 samples/s measured under load); raise it on a machine of your own.
    options.add(parser, "threads", help="training threads")
    options.add(parser, "seed", help="SYNTHETIC market and training seed")
    _add_sizing_and_funding(parser)
    from .demo_universe import add_universe_arguments

    add_universe_arguments(parser)


def _add_sizing_and_funding(parser: argparse.ArgumentParser) -> None:
    """Sizing and funding as ``backtest`` and ``live`` take them; passed on to the live replay too."""
    rules = parser.add_argument_group("trading rules")
    options.add(rules, "size", help="position notional / equity (cap for kelly/vol-target)")
    options.add(rules, "stop_loss", "take_profit")
    options.add_sizing(parser)
    options.add_funding(parser)


def _rule_flags(args) -> list[str]:
    """The live replay's flags for the same sizing, stops and funding as the demo's backtest."""
    flags = ["--size", str(args.size), "--sizing", args.sizing, "--max-risk", str(args.max_risk),
             "--kelly-scale", str(args.kelly_scale), "--target-vol", str(args.target_vol),
             "--vol-window", str(args.vol_window)]  # fmt: skip
    for name in ("stop_loss", "take_profit"):
        if getattr(args, name) is not None:
            flags += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return flags + (["--no-funding"] if args.no_funding else [])


def _candles(args, size: DemoSize):
    """``(candles, label, symbol)``; the label says SYNTHETIC when it is."""
    if args.data:
        from .train.inputs import load_candles

        candles = load_candles(args.data, args.symbol, args.interval)
        last = args.last or (size.bars if args.quick else None)
        return (candles[-last:] if last else candles), f"{args.data}", args.symbol
    if args.fetch:
        from .data.bybit import BybitClient
        from .data.candles import interval_to_ms

        with BybitClient(progress=False) as client:
            since = int(time.time() * 1000) - (size.bars + 2) * interval_to_ms(args.interval)
            return (
                client.fetch_klines(args.symbol, args.interval, since),
                f"Bybit {args.symbol} {args.interval}",
                args.symbol,
            )
    from .data.synthetic import SYNTHETIC_NOTE, synthetic_candles

    return synthetic_candles(size.bars, seed=args.seed), SYNTHETIC_NOTE, SYNTHETIC_TAG


def _train(args, size: DemoSize, candles, out: Path):
    from .train import TrainConfig, train

    config = TrainConfig(
        out=str(out / "train"),
        variant="atto",
        window=size.window,
        epochs=size.epochs,
        folds=size.folds,
        max_windows=size.max_windows,
        batch_size=size.batch_size,
        warmup_epochs=0.5 if size.epochs > 1 else 0.0,
        patience=2,
        seed=args.seed,
        num_threads=args.threads,
        progress=False,
    )
    if (out / "train" / "results.json").exists():
        import shutil

        shutil.rmtree(out / "train")  # a demo run always starts fresh
    return train(config, candles=candles)


def _backtest(
    checkpoint: str,
    context,
    holdout_from: int,
    threshold: float,
    title: str,
    out: Path,
    args=None,
    verdict=None,
):
    """Backtest the held-out bars with the trading engineer's batch path; returns (report, result, metrics,
    signals). ``verdict`` (report keyword arguments: τ source, skill) heads the report."""
    from .data.funding import funding_for_bars
    from .prediction import checkpoint_decisions  # the backtest command's decision path
    from .trading.backtest import BacktestConfig, run_backtest
    from .trading.report import periods_per_year_from, write_report
    from .trading.sizing import SizingRule, sizing_from_args

    signals, probs, _, _ = checkpoint_decisions(checkpoint, context, threshold)
    signals = signals[holdout_from:]
    probs = np.full((len(signals), 3), np.nan) if probs is None else probs[holdout_from:]
    c = context[holdout_from:]
    ppy = periods_per_year_from(c.start_ms)
    config = BacktestConfig(
        stop_loss=getattr(args, "stop_loss", None), take_profit=getattr(args, "take_profit", None)
    )
    rule = sizing_from_args(args, config, ppy) if args is not None else SizingRule()
    # vol-target needs the closes before the held-out part, as the live replay has them in its history
    sizes = rule.sizes(
        np.r_[np.zeros(holdout_from), signals],
        np.r_[np.full((holdout_from, 3), np.nan), probs],
        context.close,
    )
    funding = (
        funding_for_bars(args, c.start_ms, symbol=args.symbol) if args is not None and args.data else None
    )
    result = run_backtest(
        c.open,
        c.high,
        c.low,
        c.close,
        signals,
        sizes[holdout_from:],
        config,
        funding=funding,
        timestamps_ms=c.start_ms,
    )
    report = write_report(
        result,
        c.start_ms,
        c.close,
        out / "report",
        periods_per_year=ppy,
        title=title,
        checkpoint=checkpoint,
        threshold=threshold,
        **(verdict or {}),
    )
    return report, result, result.metrics(ppy), signals


def _live_replay(
    checkpoint: str,
    store: Path,
    symbol: str,
    interval: str,
    threshold: float,
    out: Path,
    start_ms: int,
    flags=(),
) -> list[dict]:
    """The held-out part through ``python -m convnext_fast.live`` (a real subprocess, as a user runs it),
    trading from ``start_ms`` as the backtest does."""
    jsonl = out / "live.jsonl"
    state = out / "live_state.db"
    state.unlink(missing_ok=True)  # a demo run always starts fresh
    cmd = [
        sys.executable, "-m", "convnext_fast.live", "--source", "replay", "--data", str(store), "--symbol", symbol, "--interval", interval,
        "--checkpoint", checkpoint, "--threshold", str(threshold), "--size", "1", "--out", str(jsonl),
        "--state", str(state), "--start", str(start_ms), *flags,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"live replay failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return [json.loads(line) for line in jsonl.read_text().splitlines()]


def run(args: argparse.Namespace) -> int:
    if getattr(args, "universe", False):
        from .demo_universe import run_universe_demo

        return run_universe_demo(args)
    from .data.store import CandleStore
    from .trading.report import periods_per_year_from, write_trades_csv
    from .trading.threshold import resolve_threshold
    from .trading.verdict import market_check, verdict_line
    from .train import load_checkpoint

    started = time.perf_counter()
    size = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    candles, label, symbol = _candles(args, size)
    is_synthetic = symbol == SYNTHETIC_TAG
    if len(candles) < size.holdout * 3:
        raise UserError(f"the demo needs at least {size.holdout * 3} candles, got {len(candles)}")
    print(f"data: {label} — {len(candles)} candles {candles!r}", flush=True)

    phase_s = {"data": time.perf_counter() - started}
    train_part = candles[: -size.holdout]
    result = _train(args, size, train_part, out)
    phase_s["train"] = time.perf_counter() - started - sum(phase_s.values())
    checkpoint = result.folds[-1]["checkpoint"]
    _, meta = load_checkpoint(checkpoint, fused=False)
    need = meta.feature_spec.warmup + size.window + 8  # = LiveEngine.history_needed
    context = candles[-(size.holdout + need) :]
    title = f"convnext_fast demo backtest — {'SYNTHETIC market (not real data)' if is_synthetic else label}"
    threshold, source = resolve_threshold(args.threshold, meta, f"checkpoint {checkpoint}")
    print(f"τ = {threshold:g} ({source})")
    skill, no_skill = _holdout_skill(checkpoint, candles, meta, size.holdout, threshold)
    verdict = {"threshold_source": source, "skill": skill, "no_skill": no_skill}
    report, bt, metrics, bt_signals = _backtest(
        checkpoint, context, need, threshold, title, out, args, verdict
    )
    trades_csv = write_trades_csv(bt.trades, report.parent / "trades.csv")
    held_out = context[need:]
    market = market_check(metrics, held_out.close, periods_per_year_from(held_out.start_ms))
    held_out_verdict = verdict_line(skill, market, f"{size.holdout} held-out bars", no_skill)
    phase_s["backtest + report"] = time.perf_counter() - started - sum(phase_s.values())

    store = out / "replay_store"
    CandleStore(store).write(context, symbol, args.interval)
    _copy_funding(args, store, symbol)
    live = _live_replay(
        checkpoint,
        store,
        symbol,
        args.interval,
        threshold,
        out,
        int(context.start_ms[need]),
        _rule_flags(args),
    )
    phase_s["live replay"] = time.perf_counter() - started - sum(phase_s.values())
    bars = [r for r in live if r.get("event") == "candle"]
    summary = next(r for r in live if r.get("event") == "summary")
    live_signals = np.array([r["signal"] for r in bars])
    same = int((live_signals == bt_signals[: len(live_signals)]).sum()) if len(bars) == len(bt_signals) else 0

    pooled = result.pooled.get("model", {})
    baselines = result.pooled.get("baselines", {})
    rows = [
        ("data", "SYNTHETIC market (generated)" if is_synthetic else label),
        ("candles (train / held out)", f"{len(train_part)} / {size.holdout}"),
        ("walk-forward folds", f"{len(result.folds)} (atto, T={size.window}, {size.epochs} epoch(s))"),
        ("test accuracy (pooled folds)", _fmt(pooled.get("accuracy"))),
        # next to the naive baselines on the same bars, so nobody mistakes 0.36 for skill
        baseline_accuracy_row(baselines),
        (
            "test log loss: model / majority",
            " / ".join(_fmt(d.get("log_loss")) for d in (pooled, baselines.get("majority_class", {}))),
        ),
        ("threshold τ", f"{threshold:g} ({source})"),
        ("held-out backtest return", f"{metrics.total_return:.2%}"),
        ("held-out Sharpe / max DD", f"{metrics.sharpe:.2f} / {metrics.max_drawdown:.2%}"),
        ("held-out trades", str(metrics.total_trades)),
        ("live replay = backtest decisions", f"{same} / {len(bt_signals)} bars"),
        ("live tick-to-signal p50 / p99", _latency(summary)),
        ("report", str(report)),
        ("trades", str(trades_csv)),
        ("verdict, walk-forward test", result.verdict),
        ("verdict, held-out backtest", held_out_verdict),
        (
            "wall time",
            f"{time.perf_counter() - started:.0f} s ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in phase_s.items())
            + ")",
        ),
    ]
    (out / "summary.json").write_text(json.dumps(dict(rows), indent=1))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows if not k.startswith("verdict")))
    # The verdicts last and whole, each on its own line: the answer a reader looks for.
    print(result.verdict)
    print(held_out_verdict)
    return 0 if same == len(bt_signals) else 1


def _holdout_skill(checkpoint: str, candles, meta: CheckpointMeta, holdout: int, threshold: float):
    """Model vs naive baselines on the held-out bars, the baselines fitted on the checkpoint's train bars
    (which is why the model runs over all candles here, not only the backtest's context)."""
    from .prediction import model_outputs
    from .trading.decision import DecisionPolicy
    from .trading.verdict import checkpoint_skill

    outputs, _ = model_outputs(checkpoint, candles)
    policy = DecisionPolicy.from_meta(meta, threshold, where=f"checkpoint {checkpoint}")
    _, probs, score = policy.batch(outputs)
    if probs is not None:  # only bars the model predicted are scored (the others are Hold by default)
        probs = np.where(np.isfinite(outputs).all(axis=1)[:, None], probs, np.nan)
    return checkpoint_skill(
        meta, candles, probs, None if policy.classification else score, len(candles) - holdout
    )


def _copy_funding(args, store: Path, symbol: str) -> None:
    """The live replay's paper broker charges the funding the backtest charged."""
    from .data.funding import find_funding, load_funding, save_funding

    if args.no_funding or not (args.data or args.funding):
        return
    rates = load_funding(args.funding) if args.funding else find_funding(args.data, args.symbol)
    if rates is not None:
        save_funding(store, rates, symbol)


def _latency(summary: dict) -> str:
    total = summary.get("latency_us", {}).get("total")
    return "n/a" if not total else f"{total['p50'] / 1e3:.2f} / {total['p99'] / 1e3:.2f} ms"
