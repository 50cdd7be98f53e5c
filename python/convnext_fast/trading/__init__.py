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

from .._lazy import lazy_exports

# Loaded on first use: the backtest and broker import numba, which no --help should wait for.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TradingInputError": "_checks",
        "TRADE_DTYPE": "backtest",
        "BacktestConfig": "backtest",
        "BacktestResult": "backtest",
        "run_backtest": "backtest",
        "sweep_thresholds": "backtest",
        "PaperBroker": "broker",
        "Metrics": "metrics",
        "compute_metrics": "metrics",
        "signal_from_probs": "signals",
        "signals_from_probs": "signals",
        "signals_from_regression": "signals",
    },
)

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
