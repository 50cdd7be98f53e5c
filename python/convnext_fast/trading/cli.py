"""``convnext-fast backtest``: candles + (a checkpoint, or saved signals/probabilities) → HTML report.

The wiring is thin: candles from the data module, probabilities from the checkpoint's model on the
checkpoint's features (or from ``--probs``/``--signals`` files aligned one per candle), then
:func:`run_backtest` and :func:`write_report`. ``--sweep`` also prints a parallel threshold sweep.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..cli import options
from ..errors import UserError

# numba (backtest), matplotlib (report) and pyarrow (funding) load in run(): --help never waits for them.
PORTFOLIO_SIZINGS = ("portfolio", "symbol")  # trading/portfolio.py's SIZINGS (it imports numba)

if TYPE_CHECKING:
    from ..train.checkpoint import CheckpointMeta


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
    options.add(
        parser,
        "threshold",
        default=None,
        help="confidence threshold τ, or 'auto': the τ the trainer chose on the checkpoint's validation bars "
        "(default: auto with --checkpoint, else 0.5)",
    )
    options.add(parser, "size")
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


DEFAULT_THRESHOLD = 0.5  # without a checkpoint (saved --probs) there is no validation-chosen τ


@dataclass(frozen=True)
class _Decisions:
    signals: np.ndarray
    probs: np.ndarray | None
    meta: CheckpointMeta | None = None
    pred: np.ndarray | None = None  # regression forecasts (returns), for the verdict
    known: np.ndarray | None = None  # bars with a model output (others are Hold without a prediction)
    threshold: float | None = None
    source: str = ""  # where τ came from, said on every report


def _decisions(args, candles) -> _Decisions:
    from ..prediction import model_outputs
    from .decision import DecisionPolicy
    from .signals import signals_from_probs
    from .threshold import resolve_threshold

    n = len(candles)
    if args.signals:
        return _Decisions(_load_npy("--signals", args.signals, n, ()), None)
    if args.probs:
        tau, source = resolve_threshold(args.threshold, None, "--probs", fallback=DEFAULT_THRESHOLD)
        probs = _load_npy("--probs", args.probs, n, (3,))
        return _Decisions(signals_from_probs(probs, tau), probs, threshold=tau, source=source)
    outputs, meta = model_outputs(args.checkpoint, candles, args.symbol)
    where = f"checkpoint {args.checkpoint}"
    tau, source = resolve_threshold(args.threshold, meta, where)
    policy = DecisionPolicy.from_meta(meta, tau, where=where)
    signals, probs, score = policy.batch(outputs)
    known = np.isfinite(outputs).all(axis=1)
    pred = None if policy.classification else score
    return _Decisions(signals, probs, meta, pred=pred, threshold=tau, source=source, known=known)


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
    """One row per τ; a row with too few trades for its Sharpe to mean anything says so."""
    from .backtest import sweep_thresholds
    from .verdict import few_trades_warning

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
        n_trades = int(sweep["n_trades"][k])
        warning = few_trades_warning(n_trades)
        print(
            f"{tau:9.3f} {sweep['total_return'][k]:9.2%} {sweep['sharpe'][k]:7.2f} "
            f"{sweep['max_drawdown'][k]:8.2%} {n_trades:7d}" + (f"  WARNING {warning}" if warning else "")
        )


def _portfolio_threshold(args) -> float | None:
    """The number ``--threshold`` (or ``auto``) means for the portfolio path, said once."""
    from .threshold import resolve_threshold

    if not args.checkpoint:
        return resolve_threshold(args.threshold, None, "--probs", fallback=DEFAULT_THRESHOLD)[0]
    meta = None
    if not isinstance(args.threshold, float):
        from ..train import load_checkpoint

        _, meta = load_checkpoint(args.checkpoint, allow_universe=True)
    tau, source = resolve_threshold(args.threshold, meta, f"checkpoint {args.checkpoint}")
    print(f"τ = {tau:g} ({source})")
    return tau


def run(args: argparse.Namespace) -> int:
    from ..data.funding import funding_for_bars
    from .backtest import config_from_args, run_backtest
    from .portfolio_cli import run_portfolio_cli
    from .report import periods_per_year_from, write_report, write_trades_csv
    from .sizing import sizing_from_args
    from .traded_bars import first_traded_bar
    from .verdict import checkpoint_skill, market_check, verdict_line

    if getattr(args, "symbols", None):
        args.threshold = _portfolio_threshold(args)
        return run_portfolio_cli(args)
    config = config_from_args(args)
    thresholds = _sweep_thresholds(args)
    candles = _candles(args)
    decided = _decisions(args, candles)
    if decided.threshold is not None:
        print(f"τ = {decided.threshold:g} ({decided.source})")
    # features and windows use the whole history; only the trading starts at the first traded bar
    first = first_traded_bar(args.start, candles, decided.meta)
    full = candles
    candles, signal = candles[first:], decided.signals[first:]
    probs = None if decided.probs is None else decided.probs[first:]
    c = candles
    ppy = periods_per_year_from(c.start_ms)
    sizing = sizing_from_args(args, config, ppy)
    sizes = sizing.sizes(signal, probs, c.close)
    funding = funding_for_bars(args, c.start_ms, symbol=args.symbol)
    result = run_backtest(
        c.open, c.high, c.low, c.close, signal, sizes, config, funding=funding, timestamps_ms=c.start_ms
    )
    skill, no_skill = None, ""
    if decided.meta is not None:
        # only bars the model predicted are scored (the decision path fills the others with Hold)
        probs_scored = (
            None if decided.probs is None else np.where(decided.known[:, None], decided.probs, np.nan)
        )
        skill, no_skill = checkpoint_skill(decided.meta, full, probs_scored, decided.pred, first)
    m = result.metrics(ppy)
    market = market_check(m, c.close, ppy)
    path = write_report(
        result,
        c.start_ms,
        c.close,
        args.out,
        periods_per_year=ppy,
        checkpoint=args.checkpoint or args.probs or args.signals,
        threshold=decided.threshold,
        threshold_source=decided.source,
        skill=skill,
        no_skill=no_skill,
    )
    write_trades_csv(result.trades, path.parent / "trades.csv")
    print(
        f"{len(c)} bars, {m.total_trades} trades, total return {m.total_return:.2%}, Sharpe {m.sharpe:.2f}, "
        f"max drawdown {m.max_drawdown:.2%}, fees {m.fees_paid:.2f}, funding {m.funding_paid:.2f} "
        f"(sizing {args.sizing}) → {path}"
    )
    print(verdict_line(skill, market, f"{len(c)} traded bars", no_skill))
    if thresholds:
        _print_sweep(args, thresholds, candles, probs, config, ppy, sizing, funding)
    return 0
