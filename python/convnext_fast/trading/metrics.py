"""Performance metrics of an equity curve and its trades; the formulas are written out in docs/metrics.md.

Return-based ratios use the simple per-bar returns ``r_t = E_t / E_{t-1} - 1`` and follow quantstats
(risk-free rate 0): Sharpe = mean / std(ddof=1) · √P, Sortino = mean / √(Σ_{r<0} r² / n) · √P,
CAGR = (E_end / E_0)^(P / n) − 1 with n returns and P periods per year.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ._checks import TradingInputError, as_float_array, check_finite, check_positive


@dataclass(frozen=True)
class Metrics:
    total_return: float
    cagr: float
    volatility: float  # annualised std of bar returns
    sharpe: float
    sortino: float
    downside_deviation: float  # per bar, as in quantstats' Sortino
    max_drawdown: float  # ≤ 0, fraction below the running peak
    max_drawdown_duration_bars: int
    calmar: float
    total_trades: int
    win_rate: float
    profit_factor: float
    avg_trade_bars: float
    exposure: float  # fraction of bar closes with a position open
    turnover: float  # traded notional / mean equity
    fees_paid: float
    funding_paid: float
    final_equity: float

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Fraction below the running peak at every bar (≤ 0)."""
    return equity / np.maximum.accumulate(equity) - 1.0


def longest_underwater(equity: np.ndarray) -> int:
    """The longest run of consecutive bars whose equity is below the previous peak."""
    underwater = np.concatenate(([False], drawdown(equity) < 0, [False])).astype(np.int8)
    edges = np.diff(underwater)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max()) if len(starts) else 0


def compute_metrics(equity, trades: np.ndarray, periods_per_year: float) -> Metrics:
    """``equity [N]`` marked at every bar's close (``equity[0]`` is the start), ``trades`` the structured records of :mod:`.backtest`, ``periods_per_year`` bars per year (24·365 for
    hourly crypto)."""
    eq = as_float_array("equity", equity)
    check_finite("equity", eq)
    if len(eq) < 2:
        raise TradingInputError(f"equity needs at least 2 points, got {len(eq)}")
    if (eq <= 0).any():
        raise TradingInputError("equity must stay > 0 for return-based metrics (the account was wiped out)")
    ppy = check_positive("periods_per_year", periods_per_year)
    r = eq[1:] / eq[:-1] - 1.0
    n = len(r)
    total_return = eq[-1] / eq[0] - 1.0
    cagr = (eq[-1] / eq[0]) ** (ppy / n) - 1.0
    std = r.std(ddof=1) if n > 1 else float("nan")
    downside = np.sqrt(np.sum(r[r < 0] ** 2) / n)
    max_dd = float(drawdown(eq).min())

    pnl = trades["pnl"]
    gains, losses = pnl[pnl > 0].sum(), -pnl[pnl < 0].sum()
    n_trades = len(trades)
    traded_notional = (trades["qty"] * (trades["entry_price"] + trades["exit_price"])).sum()
    return Metrics(
        total_return=float(total_return),
        cagr=float(cagr),
        volatility=float(std * np.sqrt(ppy)),
        sharpe=_ratio(r.mean(), std) * np.sqrt(ppy),
        sortino=_ratio(r.mean(), downside) * np.sqrt(ppy),
        downside_deviation=float(downside),
        max_drawdown=max_dd,
        max_drawdown_duration_bars=longest_underwater(eq),
        calmar=_ratio(cagr, -max_dd),
        total_trades=n_trades,
        win_rate=float(np.mean(pnl > 0)) if n_trades else float("nan"),
        profit_factor=(float(gains / losses) if losses > 0 else float("inf")) if n_trades else float("nan"),
        avg_trade_bars=float(trades["bars_held"].mean()) if n_trades else float("nan"),
        exposure=float(trades["bars_held"].sum() / len(eq)),
        turnover=float(traded_notional / eq.mean()),
        fees_paid=float(trades["fees"].sum()),
        funding_paid=float(trades["funding"].sum()),
        final_equity=float(eq[-1]),
    )
