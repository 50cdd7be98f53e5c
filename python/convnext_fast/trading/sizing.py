"""Position sizing: pure functions returning a position's notional as a fraction of equity.

They take scalars or arrays (broadcast) and return the same shape; the result feeds ``size`` of
:func:`~convnext_fast.trading.backtest.run_backtest` and ``PaperBroker.on_bar``. A size is capped by
``max_fraction`` (the most of equity one position may use) and, where a stop distance is given, by
``max_risk / stop_distance`` so that a stop-out loses at most ``max_risk`` of equity (before fees/gaps).
"""

from __future__ import annotations

import numpy as np

from ._checks import TradingInputError, check_positive, check_threshold


def _array(name: str, values, *, low: float, high: float = np.inf, open_low: bool = False) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    below = array <= low if open_low else array < low
    if (~np.isfinite(array)).any() or below.any() or (array > high).any():
        bound = "(" if open_low else "["
        raise TradingInputError(f"{name} must be finite and in {bound}{low}, {high}], got {values}")
    return array


def _result(array: np.ndarray):
    return float(array) if array.ndim == 0 else array


def kelly_fraction(p_win, reward_risk):
    """The Kelly fraction ``f* = p − (1 − p) / b`` for win probability ``p`` and reward/risk ``b``, floored at
    0 (no edge → no bet)."""
    p = _array("p_win", p_win, low=0.0, high=1.0)
    b = _array("reward_risk", reward_risk, low=0.0, open_low=True)
    return _result(np.maximum(p - (1.0 - p) / b, 0.0))


def _cap(fraction: np.ndarray, stop_distance, max_fraction: float, max_risk: float | None) -> np.ndarray:
    capped = np.minimum(fraction, check_positive("max_fraction", max_fraction))
    if max_risk is not None:
        stop = _array("stop_distance", stop_distance, low=0.0, high=1.0, open_low=True)
        capped = np.minimum(capped, check_threshold("max_risk", max_risk) / stop)
    return capped


def half_kelly_size(
    confidence,
    reward_risk,
    stop_distance,
    *,
    max_fraction: float = 1.0,
    max_risk: float | None = 0.02,
    kelly_scale: float = 0.5,
):
    """``kelly_scale`` (½) × the Kelly fraction of ``confidence`` (the model's probability that the trade
    wins) at ``reward_risk`` = take-profit distance / stop distance, capped by ``max_fraction`` and by
    ``max_risk / stop_distance`` (``stop_distance`` a fraction of the price, e.g. 0.02)."""
    kelly = np.asarray(kelly_fraction(confidence, reward_risk))
    scale = check_positive("kelly_scale", kelly_scale)
    return _result(_cap(scale * kelly, stop_distance, max_fraction, max_risk))


def fixed_fraction_size(risk_fraction: float, stop_distance, *, max_fraction: float = 1.0):
    """Risk a fixed ``risk_fraction`` of equity per trade: size ``risk_fraction / stop_distance``, capped by
    ``max_fraction``."""
    check_threshold("risk_fraction", risk_fraction)
    return _result(_cap(np.asarray(np.inf), stop_distance, max_fraction, risk_fraction))


def volatility_target_size(realized_vol, target_vol: float, *, max_fraction: float = 1.0):
    """Scale exposure so the position's volatility is ``target_vol``: ``target_vol / realized_vol`` (both
    annualised), capped by ``max_fraction``; 0 where the volatility is unknown (NaN, warm-up) or zero."""
    vol = np.asarray(realized_vol, dtype=np.float64)
    if (vol < 0).any() or np.isinf(vol).any():
        raise TradingInputError("realized_vol must be >= 0 and finite (NaN marks unknown)")
    target = check_positive("target_vol", target_vol)
    known = np.isfinite(vol) & (vol > 0)
    size = np.where(known, target / np.where(known, vol, 1.0), 0.0)
    return _result(np.minimum(size, check_positive("max_fraction", max_fraction)))


def realized_volatility(close, window: int, periods_per_year: float) -> np.ndarray:
    """Causal rolling standard deviation (ddof=1) of log returns over ``window`` bars, annualised by
    √``periods_per_year``; NaN until ``window`` returns exist (the first ``window`` bars)."""
    c = np.asarray(close, dtype=np.float64)
    if c.ndim != 1 or (~np.isfinite(c)).any() or (c <= 0).any():
        raise TradingInputError("close must be a 1-D array of finite prices > 0")
    if not isinstance(window, int | np.integer) or window < 2:
        raise TradingInputError(f"window must be an integer >= 2, got {window!r}")
    ppy = check_positive("periods_per_year", periods_per_year)
    vol = np.full(len(c), np.nan)
    log_returns = np.diff(np.log(c))
    if len(log_returns) >= window:
        windows = np.lib.stride_tricks.sliding_window_view(log_returns, window)
        vol[window:] = windows.std(axis=1, ddof=1) * np.sqrt(ppy)
    return vol
