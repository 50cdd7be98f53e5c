"""The decision threshold τ chosen on a validation split (never the test split), through the one decision
path: :class:`~convnext_fast.trading.decision.DecisionPolicy` turns the model's raw outputs into signals at
every τ on a grid, :func:`~convnext_fast.trading.backtest.run_backtest` trades them with fees, and the τ
with the best validation Sharpe among those making at least ``min_trades`` trades wins.

The grid: probabilities 0.34 … 0.78 for a classifier (below 1/3 the arg-max rule alone decides); for a
regression model, quantiles of the validation bars' absolute predicted return, so τ sits on the scale the
model actually predicts (a fixed 0.5 = 50 % return would never trade).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .model_meta import ModelMeta

from ._checks import TradingInputError
from .backtest import BacktestConfig, run_backtest
from .decision import DecisionPolicy
from .verdict import MIN_TRADES_FOR_SHARPE

CLASSIFICATION_GRID = tuple(round(0.34 + 0.02 * k, 2) for k in range(23))
REGRESSION_QUANTILES = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen ``threshold`` and the validation backtest of every τ on the grid (for the record)."""

    threshold: float
    rule: str  # why this τ, in words
    grid: tuple[float, ...]
    sharpe: tuple[float, ...]
    total_return: tuple[float, ...]
    n_trades: tuple[int, ...]

    def to_dict(self) -> dict:
        # strict JSON has no NaN: a τ that never trades has no Sharpe
        out = asdict(self)
        out["sharpe"] = [s if np.isfinite(s) else None for s in self.sharpe]
        return out


def threshold_grid(policy: DecisionPolicy, outputs: np.ndarray) -> np.ndarray:
    """The τ values tried for ``policy``'s task over raw ``outputs [N, K]`` (NaN rows ignored)."""
    if policy.classification:
        return np.asarray(CLASSIFICATION_GRID)
    out = np.asarray(outputs, dtype=np.float64)
    pred = np.abs(out[np.isfinite(out).all(axis=1), 0] * policy.scale)
    if len(pred) == 0:
        raise TradingInputError("no finite model output on the validation bars to choose τ from")
    # τ must stay below 1 (DecisionRule's bound for a return) and distinct values only
    return np.unique(np.minimum(np.quantile(pred, REGRESSION_QUANTILES), 0.999))


def backtest_summary(result, periods_per_year: float) -> tuple[float, float, int]:
    """``(total return, Sharpe, trades)`` of a backtest; an account wiped out (equity <= 0, which the
    return-based metrics refuse) scores a Sharpe of -inf, so no τ that ruins it is ever chosen."""
    equity = result.equity
    if (equity <= 0).any():
        return float(equity[-1] / equity[0] - 1.0), float("-inf"), len(result.trades)
    m = result.metrics(periods_per_year)
    return float(m.total_return), float(m.sharpe), int(m.total_trades)


def select_threshold(
    policy: DecisionPolicy,
    outputs,
    open_,
    high,
    low,
    close,
    *,
    periods_per_year: float,
    config: BacktestConfig | None = None,
    min_trades: int = MIN_TRADES_FOR_SHARPE,
) -> ThresholdChoice:
    """τ on the validation bars: ``outputs [N, K]`` raw model outputs, one row per bar of the OHLC arrays
    (NaN rows: no prediction, Hold). Among the τ with at least ``min_trades`` trades the best Sharpe wins;
    when none trades that often, the τ with the most trades (a smaller sample, said in ``rule``)."""
    config = config or BacktestConfig()
    grid = threshold_grid(policy, outputs)
    sharpe, total, trades = [], [], []
    for tau in grid:
        signals, _, _ = DecisionPolicy(policy.task, policy.n_outputs, float(tau), policy.scale).batch(outputs)
        result = run_backtest(open_, high, low, close, signals, 1.0, config)
        total_return, ratio, n_trades = backtest_summary(result, periods_per_year)
        sharpe.append(ratio)
        total.append(total_return)
        trades.append(n_trades)
    s, n = np.asarray(sharpe), np.asarray(trades)
    enough = n >= min_trades
    if enough.any():
        score = np.where(enough & np.isfinite(s), s, -np.inf)
        k = int(np.argmax(score)) if np.isfinite(score).any() else int(np.flatnonzero(enough)[0])
        rule = f"best validation Sharpe among τ with >= {min_trades} trades"
    else:
        # The most trades, then the better Sharpe: the best-sampled τ available
        k = int(np.lexsort((np.nan_to_num(-s, nan=np.inf), -n))[0])
        rule = f"no τ made {min_trades} validation trades; the τ with the most ({n[k]})"
    return ThresholdChoice(
        threshold=float(grid[k]),
        rule=rule,
        grid=tuple(float(t) for t in grid),
        sharpe=tuple(sharpe),
        total_return=tuple(total),
        n_trades=tuple(int(t) for t in trades),
    )


AUTO = "auto"  # --threshold auto (cli.argtypes.threshold_or_auto spells the same word)


def resolve_threshold(
    requested, meta: ModelMeta | None, where: str, fallback: float | None = None
) -> tuple[float, str]:
    """``(τ, where it came from)``. ``requested`` is a number, ``"auto"`` (the checkpoint's ``threshold``,
    chosen on its validation bars) or None (auto with a checkpoint, else ``fallback``). ``auto`` without
    a chosen τ is a :class:`UserError` naming the fix."""
    from ..errors import UserError

    if requested is not None and requested != AUTO:
        return float(requested), "--threshold"
    if meta is None:
        if requested == AUTO or fallback is None:
            raise UserError("--threshold auto needs a --checkpoint (its trainer chose τ); give a number")
        return float(fallback), "the default (no checkpoint to take τ from)"
    chosen = meta.threshold
    if chosen is None:
        raise UserError(
            f"{where} has no validation-chosen threshold (trained before τ was chosen, or a universe); "
            "pass --threshold NUMBER"
        )
    return float(chosen), f"chosen on the validation bars of {where}"
