"""What a fold's model would have traded: τ chosen on its validation bars, then its test bars backtested at
that τ against buy-and-hold on the same bars (single-series runs; a universe's bars interleave symbols).

The trading modules own the decision and the fills; this module only lines the fold's window outputs up
with its bars. It imports them lazily, as :mod:`.tune` does, so importing the trainer stays light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def per_bar(end_idx: np.ndarray, outputs: np.ndarray) -> tuple[int, int, np.ndarray]:
    """``(first, last, rows)``: the raw outputs laid on every bar from the first window's end bar to the
    last (NaN rows between windows, e.g. with ``--stride``: the decision path holds there)."""
    end_idx = np.asarray(end_idx, dtype=np.int64)
    first, last = int(end_idx[0]), int(end_idx[-1])
    rows = np.full((last - first + 1, outputs.shape[1]), np.nan)
    rows[end_idx - first] = outputs
    return first, last, rows


def choose_threshold(policy, end_idx, outputs, candles, periods_per_year: float):
    """The :class:`~convnext_fast.trading.threshold.ThresholdChoice` of the validation windows."""
    from ..trading.threshold import select_threshold

    first, last, rows = per_bar(end_idx, outputs)
    c = candles[first : last + 1]
    return select_threshold(policy, rows, c.open, c.high, c.low, c.close, periods_per_year=periods_per_year)


def test_trading(policy, threshold: float, end_idx, outputs, candles, periods_per_year: float):
    """``(record, strategy_returns, hold_returns)`` of the test windows traded at ``threshold`` (fees
    included, default :class:`~convnext_fast.trading.backtest.BacktestConfig`). The record holds only
    numbers that always exist (a Sharpe can be undefined; the verdict computes it from the returns)."""
    from ..trading.backtest import run_backtest
    from ..trading.decision import DecisionPolicy
    from ..trading.threshold import backtest_summary

    first, last, rows = per_bar(end_idx, outputs)
    c = candles[first : last + 1]
    signals, _, _ = DecisionPolicy(policy.task, policy.n_outputs, threshold, policy.scale).batch(rows)
    result = run_backtest(c.open, c.high, c.low, c.close, signals, 1.0)
    total_return, _, n_trades = backtest_summary(result, periods_per_year)
    record = {
        "threshold": threshold,
        "total_return": total_return,
        "n_trades": n_trades,
        "hold_return": float(c.close[-1] / c.close[0] - 1.0),
    }
    return record, result.returns, np.diff(c.close) / c.close[:-1]


def pooled_market(run_dir, folds, results: list[dict], periods_per_year: float):
    """The :class:`~convnext_fast.trading.verdict.MarketCheck` of every fold's test trading together
    (returns compounded, Sharpe over the concatenated per-bar returns), or None when a fold has none (a
    universe, or a run written before folds were traded)."""
    from ..trading.verdict import MarketCheck

    ks = range(folds) if isinstance(folds, int) else folds
    parts = [np.load(Path(run_dir) / f"fold_{k}" / "predictions.npz") for k in ks]
    if not parts or any("strategy_returns" not in p for p in parts):
        return None
    trades = [r.get("trading", {}).get("test", {}).get("n_trades") for r in results]
    if any(t is None for t in trades):
        return None
    strategy = np.concatenate([p["strategy_returns"] for p in parts])
    hold = np.concatenate([p["hold_returns"] for p in parts])

    def total_and_sharpe(r: np.ndarray) -> tuple[float, float]:
        std = r.std(ddof=1) if len(r) > 1 else float("nan")
        sharpe = float(r.mean() / std * np.sqrt(periods_per_year)) if std > 0 else float("nan")
        return float(np.prod(1.0 + r) - 1.0), sharpe

    (total, sharpe), (hold_total, hold_sharpe) = total_and_sharpe(strategy), total_and_sharpe(hold)
    return MarketCheck(total, sharpe, hold_total, hold_sharpe, int(sum(trades)))
