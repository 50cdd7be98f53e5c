"""Input checks shared by the trading modules; every message names the argument the user got wrong."""

from __future__ import annotations

import numpy as np

from ..checks import check_finite as _check_finite
from ..errors import UserError


class TradingInputError(UserError, ValueError):
    """A bad argument to a trading function (a ``ValueError`` for library callers, a ``UserError`` for the CLI)."""


def as_float_array(name: str, values, *, ndim: int = 1) -> np.ndarray:
    try:
        array = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TradingInputError(f"{name} must be numeric, got {type(values).__name__}") from exc
    if array.ndim != ndim:
        raise TradingInputError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def check_finite(name: str, array: np.ndarray) -> None:
    """The package's one finiteness check, raising the trading modules' error."""
    _check_finite(name, array, TradingInputError)


def check_same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise TradingInputError(f"arrays must have equal lengths, got {lengths}")
    return next(iter(lengths.values()))


def check_threshold(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise TradingInputError(f"{name} must be in [0, 1], got {value}")
    return value


def check_non_negative(name: str, value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value >= 0.0):
        raise TradingInputError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not (np.isfinite(value) and value > 0.0):
        raise TradingInputError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_ohlc(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> None:
    """Bars must pass the one OHLCV rule (finite, > 0, low ≤ open, close ≤ high); its error names the row."""
    from ..data.ohlcv import check_ohlcv

    check_ohlcv(open_, high, low, close)
