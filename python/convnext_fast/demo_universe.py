"""``convnext-fast demo --universe``: the main job over many symbols.

a SYNTHETIC universe of correlated symbols (or ``--data STORE --symbols A,B,C``) → a candle store → one model
trained over every symbol with walk-forward folds cut on time (memory-mapped inputs, per-symbol causal
normalisation, symbol-balanced sampling, a symbol embedding) → ``backtest --symbols`` on the held-out newest
bars, all symbols on one capital → one report and a summary table. Live trading of N symbols is not part of
it yet (it waits for the live engine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .cli import options
from .demo_summary import _fmt, baseline_accuracy_row
from .errors import UserError


@dataclass(frozen=True)
class UniverseDemoSize:
    symbols: int  # SYNTHETIC universe size
    bars: int  # per symbol
    holdout: int  # newest bars of every symbol kept out of training, then backtested
    window: int
    epochs: int
    folds: int
    windows_per_symbol: int
    batch_size: int
    norm_bars: int
    test_bars: int  # per fold (validation blocks as long)


FULL = UniverseDemoSize(8, 8_000, 800, 128, 2, 3, 2_000, 64, 512, 300)
QUICK = UniverseDemoSize(4, 2_400, 200, 64, 1, 2, 700, 64, 256, 100)


def add_universe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("universe (many symbols)")
    group.add_argument(
        "--universe",
        action="store_true",
        help="the chain over many symbols: a SYNTHETIC universe, or --data STORE with --symbols",
    )
    options.add(group, "symbols", help="with --universe --data: the store's symbols, e.g. BTCUSDT,ETHUSDT")


def _series(args, size: UniverseDemoSize) -> tuple[dict, str]:
    if args.data:
        from .data.cli import parse_symbols
        from .train.inputs import load_candles

        if not args.symbols:
            raise UserError("demo --universe --data STORE needs --symbols A,B,C")
        last = args.last or (size.bars if args.quick else None)
        series = {}
        for symbol in parse_symbols(args.symbols):
            candles = load_candles(args.data, symbol, args.interval)
            series[symbol] = candles[-last:] if last else candles
        return series, f"{args.data} ({', '.join(series)})"
    from .data.synthetic import SYNTHETIC_NOTE, synthetic_universe

    universe = synthetic_universe(size.symbols, size.bars, seed=args.seed)
    return universe, f"{SYNTHETIC_NOTE}: {size.symbols} correlated symbols"


UNIVERSE_THRESHOLD = 0.4  # the demo's fixed τ before τ was chosen on validation bars


def run_universe_demo(args: argparse.Namespace) -> int:
    from .cli import main as cli_main
    from .data.store import CandleStore
    from .train import TrainConfig, train

    started = time.perf_counter()
    size = QUICK if args.quick else FULL
    out = Path(args.out)
    if (out / "train").exists():
        shutil.rmtree(out / "train")  # a demo run always starts fresh
    out.mkdir(parents=True, exist_ok=True)
    series, label = _series(args, size)
    short = {s: len(c) for s, c in series.items() if len(c) < size.holdout * 3}
    if short:
        raise UserError(
            f"the universe demo needs at least {size.holdout * 3} candles per symbol, got {short}"
        )
    print(f"data: {label} — {sum(len(c) for c in series.values())} candles", flush=True)
    store = out / "store"
    shutil.rmtree(store, ignore_errors=True)
    for symbol, candles in series.items():
        CandleStore(store).write(candles, symbol, args.interval)
    phase_s = {"data": time.perf_counter() - started}

    config = TrainConfig(
        out=str(out / "train"),
        interval=args.interval,
        variant="atto",
        window=size.window,
        epochs=size.epochs,
        folds=size.folds,
        test_bars=size.test_bars,
        max_windows=size.windows_per_symbol * len(series),
        batch_size=size.batch_size,
        warmup_epochs=0.5 if size.epochs > 1 else 0.0,
        patience=2,
        seed=args.seed,
        num_threads=args.threads,
        progress=False,
        norm_bars=size.norm_bars,
        symbol_embedding=True,
    )
    result = train(config, candles={s: c[: -size.holdout] for s, c in series.items()})
    phase_s["train"] = time.perf_counter() - started - sum(phase_s.values())
    checkpoint = result.folds[-1]["checkpoint"]

    # The held-out bars start at the same time for every symbol only when they end together; trade from the
    # latest of their first held-out bars, so no symbol trades a bar it was trained on.
    holdout_ms = max(int(c.start_ms[-size.holdout]) for c in series.values())
    threshold = args.threshold
    if not isinstance(threshold, float):
        # τ is chosen on validation bars only for single-series runs (a universe's validation bars interleave
        # symbols); say so rather than guess quietly.
        threshold = UNIVERSE_THRESHOLD
        print(f"τ = {threshold:g} (fixed: universe checkpoints carry no validation-chosen τ yet)")
    print(result.verdict)
    report = out / "report"
    argv = ["backtest", "--data", str(store), "--interval", args.interval, "--checkpoint", checkpoint,
            "--symbols", ",".join(series), "--start", str(holdout_ms), "--threshold", str(threshold),
            "--out", str(report)]  # fmt: skip
    code = cli_main(argv)
    if code != 0:
        raise UserError(f"the portfolio backtest failed (exit {code})")
    phase_s["portfolio backtest + report"] = time.perf_counter() - started - sum(phase_s.values())
    metrics = json.loads((report / "metrics.json").read_text())
    pooled = result.pooled.get("model", {})
    baselines = result.pooled.get("baselines", {})
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in phase_s.items())
    rows = [
        ("data", label),
        ("symbols (held-out bars each)", f"{len(series)} ({size.holdout})"),
        (
            "walk-forward folds (cut on time)",
            f"{len(result.folds)} (atto, T={size.window}, {size.epochs} epoch(s))",
        ),
        ("training throughput", f"{result.train_samples_per_s:.0f} samples/s"),
        ("test accuracy (pooled folds, all symbols)", _fmt(pooled.get("accuracy"))),
        baseline_accuracy_row(baselines),
        ("threshold τ", f"{threshold:g}"),
        ("held-out portfolio return", f"{metrics['total_return']:.2%}"),
        ("held-out Sharpe / max DD", f"{metrics['sharpe']:.2f} / {metrics['max_drawdown']:.2%}"),
        ("held-out trades", str(int(metrics["total_trades"]))),
        ("live for N symbols", "not yet (waits for the live engine)"),
        ("report", str(report / "report.html")),
        ("wall time", f"{time.perf_counter() - started:.0f} s (" + phases + ")"),
    ]
    (out / "summary.json").write_text(json.dumps(dict(rows), indent=1))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0
