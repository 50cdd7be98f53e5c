"""``convnext-fast backtest``: candles + (a checkpoint, or saved signals/probabilities) → HTML report.

The wiring is thin: candles from the data module, probabilities from the checkpoint's model on the
checkpoint's features (or from ``--probs``/``--signals`` files aligned one per candle), then
:func:`run_backtest` and :func:`write_report`. ``--sweep`` also prints a parallel threshold sweep.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..cli import options
from ..errors import UserError
from .decision import DecisionPolicy
from .signals import signals_from_probs
from .sizing import sizing_from_args

# numba (backtest), matplotlib (report) and pyarrow (funding) load in run(): --help never waits for them.
PORTFOLIO_SIZINGS = ("portfolio", "symbol")  # trading/portfolio.py's SIZINGS (it imports numba)

PREDICT_BATCH = 512


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add(parser, "data", required=True)
    options.add(parser, "symbol", help="series in a candle-store folder")
    options.add(parser, "interval", help="kline interval in a candle-store folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a trained model checkpoint (convnext_fast.train)")
    source.add_argument("--probs", help=".npy [N, 3] probabilities (Long, Short, Hold), one row per candle")
    source.add_argument("--signals", help=".npy [N] signals (+1 Long, -1 Short, 0 Hold), one per candle")
    options.add(
        parser,
        "out",
        default=f"{options.RUNS}/backtest",
        help=f"output folder: report.html, trades.csv (default {options.RUNS}/backtest, git-ignored)",
    )
    parser.add_argument(
        "--start",
        help="first bar to trade: YYYY-MM-DD[ HH:MM] UTC, epoch ms, or 'all' (default: with --checkpoint, "
        "the start of its out-of-sample test range; else the first bar)",
    )
    options.add(parser, "threshold", "size")
    parser.add_argument("--sweep", help="comma-separated thresholds to sweep in parallel, e.g. 0.4,0.5,0.6")
    options.add_trading_rules(parser)
    options.add_sizing(parser)
    options.add_funding(parser)
    group = parser.add_argument_group("portfolio (many symbols on one capital)")
    options.add(
        group,
        "symbols",
        help="comma-separated symbols of the --data store: one portfolio backtest with --checkpoint's model",
    )
    group.add_argument(
        "--portfolio-sizing",
        choices=PORTFOLIO_SIZINGS,
        default="portfolio",
        help="--size as a fraction of the portfolio's equity (portfolio) or of the capital plus the "
        "symbol's own P&L (symbol)",
    )


def _candles(args):
    from ..data.store import load_candles

    return load_candles(args.data, args.symbol, args.interval).validate()


def _load_npy(option: str, path: str, n_bars: int, shape_tail: tuple) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{option} {path!r}: cannot read a .npy array ({exc})") from None
    if array.shape != (n_bars, *shape_tail):
        raise UserError(
            f"{option} {path!r}: expected shape {(n_bars, *shape_tail)} (one per candle), got {array.shape}"
        )
    return array


def model_outputs(checkpoint: str, candles, symbol: str | None = None) -> tuple[np.ndarray, dict]:
    """Raw model outputs (logits, or scaled regression values) for every bar whose window is complete and
    finite, NaN rows elsewhere; and the checkpoint's metadata. :class:`DecisionPolicy` turns them into
    signals, the same way the live loop does bar by bar. ``symbol`` names the series for a model trained on
    a universe (its per-symbol inputs and symbol channel)."""
    import torch

    from ..data.dataset import sliding_windows
    from ..features.pipeline import FeatureSpec, compute_features
    from ..live.session import window_of
    from ..train import load_checkpoint
    from ..train.prepare import apply_normalisation

    model, meta = load_checkpoint(checkpoint, allow_universe=True)
    c = candles
    if meta.get("universe"):  # per-symbol causal normalisation (and HTF / symbol channels) as trained
        from ..data.universe import model_inputs

        inputs = model_inputs(candles, meta, symbol)
    else:
        features = compute_features(
            c.open, c.high, c.low, c.close, c.volume, spec=FeatureSpec.from_dict(meta["feature_spec"])
        )
        inputs = apply_normalisation(features, meta["normalisation"])
    windows, end_idx = sliding_windows(inputs, window_of(meta))
    rows = np.flatnonzero(np.isfinite(windows).all(axis=(1, 2)))
    regression = model.config.get("task") == "regression"
    chunks = [np.empty((0, model.config["num_outputs"] if regression else model.config["num_classes"]))]
    with torch.inference_mode():
        for start in range(0, len(rows), PREDICT_BATCH):
            out = model(torch.from_numpy(np.ascontiguousarray(windows[rows[start : start + PREDICT_BATCH]])))
            chunks.append(out.double().numpy())
    outputs = np.full((len(candles), chunks[0].shape[1]), np.nan)
    outputs[end_idx[rows]] = np.concatenate(chunks)
    return outputs, meta


def checkpoint_decisions(
    checkpoint: str, candles, threshold: float, symbol: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, dict, DecisionPolicy]:
    """``(signals, probs or None, meta, policy)`` of a checkpoint over ``candles``: the batch side of the
    one decision path (bars without a complete window are Hold)."""
    outputs, meta = model_outputs(checkpoint, candles, symbol)
    policy = DecisionPolicy.from_meta(meta, threshold, where=f"checkpoint {checkpoint!r}")
    signals, probs, _ = policy.batch(outputs)
    return signals, probs, meta, policy


def _signals_and_probs(args, candles) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    n = len(candles)
    if args.signals:
        return _load_npy("--signals", args.signals, n, ()), None, None
    if args.probs:
        probs = _load_npy("--probs", args.probs, n, (3,))
        return signals_from_probs(probs, args.threshold), probs, None
    signals, probs, meta, _ = checkpoint_decisions(args.checkpoint, candles, args.threshold, args.symbol)
    return signals, probs, meta


def first_traded_ms(start: str | None, meta: dict | None) -> tuple[int | None, str | None]:
    """``(start_ms or None for the first bar, note)`` of ``--start`` (YYYY-MM-DD[ HH:MM] UTC, epoch ms,
    'all'). Without ``--start`` and with a checkpoint the default is the start of its out-of-sample test
    range: trading the bars it was trained on would report an in-sample fantasy. ``note`` says so."""
    from ..data.cli import parse_time_ms

    if start == "all":
        return None, None
    if start is not None:
        return parse_time_ms(start, "--start"), None
    test_range = ((meta or {}).get("ranges") or {}).get("test")
    if not test_range:
        return None, None
    note = f"trading from {test_range[0]} UTC, the checkpoint's out-of-sample test range (--start all for every bar)"
    return parse_time_ms(test_range[0], "the checkpoint's test range"), note


def trained_until_ms(meta: dict | None) -> int | None:
    """End of the last range the checkpoint was fitted or selected on (train/val), or None if unknown."""
    from ..data.cli import parse_time_ms

    ranges = (meta or {}).get("ranges") or {}
    ends = [
        parse_time_ms(r[-1], f"the checkpoint's {name} range")
        for name, r in ranges.items()
        if name in ("train", "val") and r
    ]
    return max(ends) if ends else None


def _first_traded_bar(args, candles, meta: dict | None) -> int:
    """Index of the first bar the backtest trades (see :func:`first_traded_ms`)."""
    start_ms, note = first_traded_ms(args.start, meta)
    if start_ms is None:
        return 0
    if note:
        print(note)
    first = int(np.searchsorted(candles.start_ms, start_ms))
    if first >= len(candles) - 1:
        raise UserError(
            f"--start: {args.start or 'the test range start'} leaves fewer than 2 candles to trade"
        )
    return first


def _sweep_thresholds(args) -> list[float] | None:
    if not args.sweep:
        return None
    if args.signals:
        raise UserError("--sweep needs probabilities (--probs or a classification --checkpoint)")
    try:
        return [float(t) for t in args.sweep.split(",")]
    except ValueError:
        raise UserError(
            f"--sweep {args.sweep!r}: expected comma-separated numbers like 0.4,0.5,0.6"
        ) from None


def _print_sweep(args, thresholds, candles, probs, config, ppy, sizing, funding) -> None:
    from .backtest import sweep_thresholds

    if probs is None:
        raise UserError("--sweep needs probabilities (--probs or a classification --checkpoint)")
    c = candles
    # Whatever the threshold, an entry takes the likelier side, so sizing that side fits every threshold.
    sizes = sizing.sizes(np.where(probs[:, 0] >= probs[:, 1], 1, -1), probs, c.close)
    sweep = sweep_thresholds(
        c.open,
        c.high,
        c.low,
        c.close,
        probs,
        thresholds,
        sizes,
        config,
        funding=funding,
        periods_per_year=ppy,
    )
    print(f"{'threshold':>9} {'return':>9} {'sharpe':>7} {'max_dd':>8} {'trades':>7}")
    for k, tau in enumerate(sweep["threshold"]):
        print(
            f"{tau:9.3f} {sweep['total_return'][k]:9.2%} {sweep['sharpe'][k]:7.2f} "
            f"{sweep['max_drawdown'][k]:8.2%} {sweep['n_trades'][k]:7d}"
        )


def run(args: argparse.Namespace) -> int:
    from ..data.funding import funding_for_bars
    from .backtest import config_from_args, run_backtest
    from .portfolio_cli import run_portfolio_cli
    from .report import periods_per_year_from, write_report

    if getattr(args, "symbols", None):
        return run_portfolio_cli(args)
    config = config_from_args(args)
    thresholds = _sweep_thresholds(args)
    candles = _candles(args)
    signal, probs, meta = _signals_and_probs(args, candles)
    # features and windows use the whole history; only the trading starts at the first traded bar
    first = _first_traded_bar(args, candles, meta)
    candles, signal = candles[first:], signal[first:]
    probs = None if probs is None else probs[first:]
    c = candles
    ppy = periods_per_year_from(c.start_ms)
    sizing = sizing_from_args(args, config, ppy)
    sizes = sizing.sizes(signal, probs, c.close)
    funding = funding_for_bars(args, c.start_ms, symbol=args.symbol)
    result = run_backtest(
        c.open, c.high, c.low, c.close, signal, sizes, config, funding=funding, timestamps_ms=c.start_ms
    )
    path = write_report(result, c.start_ms, c.close, args.out, periods_per_year=ppy)
    trades_csv = Path(args.out) / "trades.csv"
    lines = [",".join(result.trades.dtype.names)] + [
        ",".join(map(str, row)) for row in result.trades.tolist()
    ]
    trades_csv.write_text("\n".join(lines) + "\n")
    m = result.metrics(ppy)
    print(
        f"{len(c)} bars, {m.total_trades} trades, total return {m.total_return:.2%}, Sharpe {m.sharpe:.2f}, "
        f"max drawdown {m.max_drawdown:.2%}, fees {m.fees_paid:.2f}, funding {m.funding_paid:.2f} "
        f"(sizing {args.sizing}) → {path}"
    )
    if thresholds:
        _print_sweep(args, thresholds, candles, probs, config, ppy, sizing, funding)
    return 0
