"""Trading: signals from model outputs, position sizing, the numba backtest, its live twin the paper broker,
metrics and the HTML report.

- :mod:`.signals` — ``signals_from_probs``, ``signal_from_probs``, ``signals_from_regression``.
- :mod:`.sizing` — half-Kelly, fixed-fraction and volatility-target sizes (pure functions).
- :mod:`.backtest` — ``BacktestConfig``, ``run_backtest``, ``sweep_thresholds``.
- :mod:`.broker` — ``PaperBroker``: bar-at-a-time, same step function as the backtest.
- :mod:`.metrics` — ``compute_metrics`` (formulas in docs/metrics.md).
- :mod:`.report` — ``write_report`` (self-contained HTML).
"""

from __future__ import annotations

from ._checks import TradingInputError
from .backtest import TRADE_DTYPE, BacktestConfig, BacktestResult, run_backtest, sweep_thresholds
from .broker import PaperBroker
from .metrics import Metrics, compute_metrics
from .signals import signal_from_probs, signals_from_probs, signals_from_regression

__all__ = [
    "TRADE_DTYPE",
    "BacktestConfig",
    "BacktestResult",
    "Metrics",
    "PaperBroker",
    "TradingInputError",
    "compute_metrics",
    "run_backtest",
    "signal_from_probs",
    "signals_from_probs",
    "signals_from_regression",
    "sweep_thresholds",
]
