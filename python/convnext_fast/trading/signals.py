"""Model outputs → trading signals: +1 Long, -1 Short, 0 Hold (class order ``[Long, Short, Hold]``).

A class signal needs confidence: Long when ``p_long > τ`` and ``p_long > p_short``, Short symmetrically,
Hold otherwise (including an exact tie). The rule is written once, in :func:`signal_from_probs_nb`; the
vectorised form, the one-bar form, the decision policy and the backtest's threshold sweep all call it, so
the live loop decides exactly what the backtest decided.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._checks import TradingInputError, as_float_array, check_finite, check_non_negative, check_threshold

LONG, SHORT, HOLD = 1, -1, 0


def check_probs(probs) -> np.ndarray:
    p = as_float_array("probs", probs, ndim=2)
    if p.shape[1] != 3:
        raise TradingInputError(f"probs must have shape [N, 3] (Long, Short, Hold), got {p.shape}")
    check_finite("probs", p)
    if ((p < 0) | (p > 1)).any():
        raise TradingInputError("probs must be probabilities in [0, 1] (apply softmax to logits first)")
    return p


@nb.njit(cache=True, nogil=True, inline="always")
def signal_from_probs_nb(p_long, p_short, threshold):
    """The probability rule for one bar: ``1.0`` Long, ``-1.0`` Short, ``0.0`` Hold (a float, as the
    numba backtest core takes its signals)."""
    if p_long > threshold and p_long > p_short:
        return 1.0
    if p_short > threshold and p_short > p_long:
        return -1.0
    return 0.0


@nb.njit(cache=True, nogil=True)
def _signals_from_probs_nb(probs, threshold, out):
    for t in range(probs.shape[0]):
        out[t] = signal_from_probs_nb(probs[t, 0], probs[t, 1], threshold)


def signals_from_probs(probs, threshold: float) -> np.ndarray:
    """``probs [N, 3]`` (Long, Short, Hold) → ``int8 [N]`` signals."""
    p = check_probs(probs)
    tau = check_threshold("threshold", threshold)
    signal = np.zeros(len(p), dtype=np.int8)
    _signals_from_probs_nb(p, tau, signal)
    return signal


def signal_from_probs(p_long: float, p_short: float, p_hold: float, threshold: float) -> int:
    """The one-bar form of :func:`signals_from_probs` for the live loop."""
    return int(signals_from_probs([[p_long, p_short, p_hold]], threshold)[0])


@nb.njit(cache=True, nogil=True, inline="always")
def signal_from_return_nb(pred, threshold):
    """The regression rule for one bar: Long (``1.0``) above ``threshold``, Short below ``-threshold``."""
    if pred > threshold:
        return 1.0
    if pred < -threshold:
        return -1.0
    return 0.0


@nb.njit(cache=True, nogil=True)
def _signals_from_returns_nb(pred, threshold, out):
    for t in range(pred.shape[0]):
        out[t] = signal_from_return_nb(pred[t], threshold)


def signals_from_regression(pred, threshold: float) -> np.ndarray:
    """Predicted forward returns ``[N]`` → ``int8 [N]``: Long above ``threshold``, Short below ``-threshold``."""
    r = as_float_array("pred", pred)
    check_finite("pred", r)
    tau = check_non_negative("threshold", threshold)
    signal = np.zeros(len(r), dtype=np.int8)
    _signals_from_returns_nb(r, tau, signal)
    return signal


def signal_from_regression(pred: float, threshold: float) -> int:
    """The one-bar form of :func:`signals_from_regression`."""
    return int(signals_from_regression([pred], threshold)[0])
