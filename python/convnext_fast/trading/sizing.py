"""Position sizing: pure functions returning a position's notional as a fraction of equity.

They take scalars or arrays (broadcast) and return the same shape; the result feeds ``size`` of
:func:`~convnext_fast.trading.backtest.run_backtest` and ``PaperBroker.on_bar``. A size is capped by
``max_fraction`` (the most of equity one position may use) and, where a stop distance is given, by
``max_risk / stop_distance`` so that a stop-out loses at most ``max_risk`` of equity (before fees/gaps).
"""

from __future__ import annotations

from dataclasses import dataclass

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


SIZINGS = ("fixed", "kelly", "vol-target")


@dataclass(frozen=True)
class SizingRule:
    """How ``backtest``, ``live`` and ``demo`` size an entry (``--sizing``); one rule, two entry points:
    :meth:`sizes` for a whole series, :class:`StreamingSizer` one closed bar at a time, same numbers.

    - ``fixed``: ``size`` for every entry.
    - ``kelly``: :func:`half_kelly_size` of the model's probability of the chosen side, at reward/risk
      ``take_profit / stop_loss`` and stop distance ``stop_loss`` (both required), capped by ``size`` and
      ``max_risk``.
    - ``vol-target``: :func:`volatility_target_size` of the :func:`realized_volatility` over ``vol_window``
      bars, capped by ``size``.
    """

    method: str = "fixed"
    size: float = 1.0
    stop_loss: float | None = None
    take_profit: float | None = None
    max_risk: float | None = 0.02
    kelly_scale: float = 0.5
    target_vol: float = 0.5
    vol_window: int = 168
    periods_per_year: float = 24 * 365

    def __post_init__(self):
        if self.method not in SIZINGS:
            raise TradingInputError(f"--sizing must be one of {', '.join(SIZINGS)}, got {self.method!r}")
        check_positive("size", self.size)
        if self.method == "kelly" and not (self.stop_loss and self.take_profit):
            raise TradingInputError(
                "--sizing kelly needs --stop-loss and --take-profit (the payoff is their ratio)"
            )
        if self.method == "vol-target":
            check_positive("target_vol", self.target_vol)
            if not isinstance(self.vol_window, int | np.integer) or self.vol_window < 2:
                raise TradingInputError(f"--vol-window must be an integer >= 2, got {self.vol_window!r}")

    def _kelly(self, signal, probs):
        """Half-Kelly of the chosen side's probability (0 on Hold)."""
        p = np.asarray(probs, dtype=np.float64)
        s = np.asarray(signal)
        confidence = np.where(s > 0, p[..., 0], np.where(s < 0, p[..., 1], 0.0))
        confidence = np.where(np.isfinite(confidence), confidence, 0.0)
        sizes = half_kelly_size(
            confidence,
            self.take_profit / self.stop_loss,
            self.stop_loss,
            max_fraction=self.size,
            max_risk=self.max_risk,
            kelly_scale=self.kelly_scale,
        )
        return np.where(s != 0, sizes, 0.0)

    def sizes(self, signal, probs=None, close=None) -> np.ndarray:
        """Per-bar sizes for a series: ``signal`` [N], ``probs`` [N, 3] (kelly), ``close`` [N] (vol-target)."""
        sig = np.asarray(signal, dtype=np.float64)
        if self.method == "fixed":
            return np.where(sig != 0, self.size, 0.0)
        if self.method == "kelly":
            if probs is None:
                raise TradingInputError(
                    "--sizing kelly needs class probabilities (not saved signals or regression)"
                )
            return self._kelly(sig, probs)
        if close is None:
            raise TradingInputError("--sizing vol-target needs the close prices")
        vol = realized_volatility(close, int(self.vol_window), self.periods_per_year)
        return np.where(sig != 0, volatility_target_size(vol, self.target_vol, max_fraction=self.size), 0.0)


class StreamingSizer:
    """:class:`SizingRule` one bar at a time: ``observe(close)`` for every closed bar (history included),
    then ``size(signal, probs)`` equals :meth:`SizingRule.sizes` at that bar."""

    def __init__(self, rule: SizingRule):
        self.rule = rule
        self._closes: list[float] = []

    def observe(self, close: float) -> None:
        if self.rule.method == "vol-target":
            self._closes.append(float(close))
            del self._closes[: -(self.rule.vol_window + 1)]  # only the last window of returns is needed

    def size(self, signal: int, probs) -> float:
        if signal == 0:
            return 0.0
        if self.rule.method == "fixed":
            return self.rule.size
        if self.rule.method == "kelly":
            return float(self.rule._kelly(np.asarray(signal), np.asarray(probs)))
        closes = np.asarray(self._closes)
        if len(closes) < self.rule.vol_window + 1:
            return 0.0  # volatility still unknown (warm-up), as in the batch rule
        vol = realized_volatility(closes, int(self.rule.vol_window), self.rule.periods_per_year)[-1]
        return float(volatility_target_size(vol, self.rule.target_vol, max_fraction=self.rule.size))

    def state(self) -> dict:
        """The closes the rule still needs (JSON floats round-trip exactly): a resume sizes bit for bit as
        an uninterrupted run, even from an exchange that serves no history on resume."""
        return {"closes": list(self._closes)}

    def set_state(self, state: dict) -> None:
        self._closes = [float(c) for c in state["closes"]]


def sizing_from_args(args, config, periods_per_year: float) -> SizingRule:
    """The :class:`SizingRule` of the sizing options (``convnext_fast.cli.options.add_sizing``; ``config``: the
    :class:`~convnext_fast.trading.backtest.BacktestConfig` whose stop/take-profit Kelly reads)."""
    return SizingRule(
        method=args.sizing,
        size=args.size,
        stop_loss=config.stop_loss,
        take_profit=config.take_profit,
        max_risk=args.max_risk,
        kelly_scale=args.kelly_scale,
        target_vol=args.target_vol,
        vol_window=args.vol_window,
        periods_per_year=periods_per_year,
    )
