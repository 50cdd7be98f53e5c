"""Model outputs → trading signals: +1 Long, -1 Short, 0 Hold (class order ``[Long, Short, Hold]``).

A class signal needs confidence: Long when ``p_long > τ`` and ``p_long > p_short``, Short symmetrically,
Hold otherwise (including an exact tie). The vectorised and one-bar forms apply the same rule, so the live
loop decides exactly what the backtest decided.
"""

from __future__ import annotations

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


def signals_from_probs(probs, threshold: float) -> np.ndarray:
    """``probs [N, 3]`` (Long, Short, Hold) → ``int8 [N]`` signals."""
    p = check_probs(probs)
    tau = check_threshold("threshold", threshold)
    p_long, p_short = p[:, 0], p[:, 1]
    signal = np.zeros(len(p), dtype=np.int8)
    signal[(p_long > tau) & (p_long > p_short)] = LONG
    signal[(p_short > tau) & (p_short > p_long)] = SHORT
    return signal


def signal_from_probs(p_long: float, p_short: float, p_hold: float, threshold: float) -> int:
    """The one-bar form of :func:`signals_from_probs` for the live loop."""
    return int(signals_from_probs([[p_long, p_short, p_hold]], threshold)[0])


def signals_from_regression(pred, threshold: float) -> np.ndarray:
    """Predicted forward returns ``[N]`` → ``int8 [N]``: Long above ``threshold``, Short below ``-threshold``."""
    r = as_float_array("pred", pred)
    check_finite("pred", r)
    tau = check_non_negative("threshold", threshold)
    signal = np.zeros(len(r), dtype=np.int8)
    signal[r > tau] = LONG
    signal[r < -tau] = SHORT
    return signal


def signal_from_regression(pred: float, threshold: float) -> int:
    """The one-bar form of :func:`signals_from_regression`."""
    return int(signals_from_regression([pred], threshold)[0])
