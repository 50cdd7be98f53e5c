"""Streaming twins of the batch indicators: O(1) work per closed bar, bar-for-bar equal to the batch outputs.

Every indicator keeps its whole state — parameters, counters, running sums and small ring buffers — in one
flat float64 block, and advances it with one ``@njit`` step ``<name>_step(state, offset, *inputs)``. Flat
blocks let the feature pipeline concatenate all indicators into a single array and advance them with one
compiled call per bar (no Python objects per indicator), and let a still-open bar be revised cheaply: copy the
committed block, step the copy, discard it.

The steps perform the same floating-point operations in the same order as the kernels in
:mod:`convnext_fast.features.indicators` (the scalar arithmetic is shared), so streaming and batch agree to
rounding — in practice exactly. The small classes at the bottom wrap one block each for direct use, in the
style of talipp: ``update(...)`` consumes a closed bar, ``revise(...)`` recomputes the still-open bar without
committing it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .indicators import (
    NAN,
    RESYNC_BARS,
    band_percent_b,
    band_spread,
    check_macd_periods,
    check_multiplier,
    check_period,
    check_stochastic_periods,
    di_and_dx,
    directional_move,
    rsi_value,
    smooth,
    stoch_raw_k,
    true_range,
    typical_price,
    volume_weighted,
    wilder_weights,
)

_JIT = {"cache": True, "nogil": True}


# ------------------------------------------------------------------------------ rolling sums of two series
def rolling_initial(n: int) -> np.ndarray:
    """Layout: [n, count, total_a, total_b, ring_a (n), ring_b (n)]."""
    n = check_period("n", n)
    block = np.zeros(4 + 2 * n)
    block[0] = n
    return block


@njit(**_JIT)
def ring_push(st, o, a, b):
    """Write a and b as the newest entries of the two rings; returns (bar index, evicted a, evicted b)."""
    n = int(st[o])
    i = int(st[o + 1])
    st[o + 1] = i + 1
    slot_a = o + 4 + i % n
    old_a, old_b = st[slot_a], st[slot_a + n]
    st[slot_a], st[slot_a + n] = a, b
    return i, old_a, old_b


@njit(**_JIT)
def ring_sums(st, o):
    """Sums of both rings, oldest entry first (the order the batch kernels sum a window in)."""
    n = int(st[o])
    newest = (int(st[o + 1]) - 1) % n
    total_a = 0.0
    total_b = 0.0
    for j in range(1, n + 1):
        slot_a = o + 4 + (newest + j) % n
        total_a += st[slot_a]
        total_b += st[slot_a + n]
    return total_a, total_b


@njit(**_JIT)
def rolling_push(st, o, a, b):
    """Add one value to each of two rolling window sums as the batch kernels do (``total += new − old``, the
    evicted value being 0.0 until the window fills; exact oldest-first recompute every RESYNC_BARS bars).
    Returns True once the window is full."""
    i, old_a, old_b = ring_push(st, o, a, b)
    if i >= st[o] and i % RESYNC_BARS == 0:
        st[o + 2], st[o + 3] = ring_sums(st, o)
    else:
        st[o + 2] += a - old_a
        st[o + 3] += b - old_b
    return i >= st[o] - 1


def sma_initial(n: int) -> np.ndarray:
    return rolling_initial(n)


@njit(**_JIT)
def sma_step(st, o, x):
    if not rolling_push(st, o, x, 0.0):
        return NAN
    return st[o + 2] * (1.0 / st[o])


# ----------------------------------------------------------------------------------------------- EMA
def ema_initial(n: int) -> np.ndarray:
    """Layout: [n, count, seed total, value]."""
    return np.array([check_period("n", n), 0.0, 0.0, 0.0])


@njit(**_JIT)
def ema_step(st, o, x):
    n = int(st[o])
    i = int(st[o + 1])
    st[o + 1] = i + 1
    if i < n - 1:
        st[o + 2] += x
        return NAN
    if i == n - 1:
        value = (st[o + 2] + x) / n
    else:
        k = 2.0 / (n + 1)
        value = smooth(st[o + 3], x, 1.0 - k, k)
    st[o + 3] = value
    return value


# ----------------------------------------------------------------------------------------------- RSI
def rsi_initial(n: int = 14) -> np.ndarray:
    """Layout: [n, count, previous close, average gain, average loss]."""
    return np.array([check_period("n", n), 0.0, 0.0, 0.0, 0.0])


@njit(**_JIT)
def rsi_step(st, o, x):
    n = int(st[o])
    i = int(st[o + 1])
    st[o + 1] = i + 1
    change = x - st[o + 2]
    st[o + 2] = x
    if i == 0:
        return NAN
    gain = st[o + 3]
    loss = st[o + 4]
    if i <= n:
        if change < 0.0:
            loss -= change
        else:
            gain += change
        if i == n:
            gain /= n
            loss /= n
    else:
        inv_n, decay = wilder_weights(n)
        gain = smooth(gain, max(change, 0.0), decay, inv_n)
        loss = smooth(loss, max(-change, 0.0), decay, inv_n)
    st[o + 3] = gain
    st[o + 4] = loss
    return rsi_value(gain, loss) if i >= n else NAN


# ---------------------------------------------------------------------------------------------- MACD
def macd_initial(fast: int = 12, slow: int = 26, signal: int = 9) -> np.ndarray:
    """Layout: [fast, slow, signal, count, slow total, fast total, slow EMA, fast EMA, signal total, signal]."""
    block = np.zeros(10)
    block[:3] = check_macd_periods(fast, slow, signal)
    return block


@njit(**_JIT)
def macd_step(st, o, x):
    fast = int(st[o])
    slow = int(st[o + 1])
    signal = int(st[o + 2])
    i = int(st[o + 3])
    st[o + 3] = i + 1
    if i < slow:
        st[o + 4] += x
        if i >= slow - fast:
            st[o + 5] += x
        if i < slow - 1:
            return NAN, NAN, NAN
        s = st[o + 4] / slow
        f = st[o + 5] / fast
    else:
        k_slow = 2.0 / (slow + 1)
        k_fast = 2.0 / (fast + 1)
        s = smooth(st[o + 6], x, 1.0 - k_slow, k_slow)
        f = smooth(st[o + 7], x, 1.0 - k_fast, k_fast)
    st[o + 6] = s
    st[o + 7] = f
    m = f - s
    first = slow + signal - 2
    if i < first:
        st[o + 8] += m
        return NAN, NAN, NAN
    if i == first:
        g = (st[o + 8] + m) / signal
    else:
        k_sig = 2.0 / (signal + 1)
        g = smooth(st[o + 9], m, 1.0 - k_sig, k_sig)
    st[o + 9] = g
    return m, g, m - g


# ----------------------------------------------------------------------------------------- Stochastic
_STOCH_HEAD = 9


def stochastic_initial(k_period: int = 14, k_smooth: int = 3, d_period: int = 3) -> np.ndarray:
    """Layout: [k_period, k_smooth, d_period, count, raw total, %K total, raw ring pos, %K ring pos,
    raw count, highs (k_period), lows (k_period), raw %K ring (k_smooth), %K ring (d_period)]."""
    k_period, k_smooth, d_period = check_stochastic_periods(k_period, k_smooth, d_period)
    block = np.zeros(_STOCH_HEAD + 2 * k_period + k_smooth + d_period)
    block[:3] = (k_period, k_smooth, d_period)
    return block


@njit(**_JIT)
def stochastic_step(st, o, high, low, close):
    k_period = int(st[o])
    k_smooth = int(st[o + 1])
    d_period = int(st[o + 2])
    i = int(st[o + 3])
    st[o + 3] = i + 1
    highs = o + _STOCH_HEAD
    lows = highs + k_period
    raw_ring = lows + k_period
    k_ring = raw_ring + k_smooth
    st[highs + i % k_period] = high
    st[lows + i % k_period] = low
    if i < k_period - 1:
        return NAN, NAN
    hi = st[highs]
    lo = st[lows]
    for j in range(1, k_period):
        hi = max(hi, st[highs + j])
        lo = min(lo, st[lows + j])
    raw = stoch_raw_k(close, hi, lo)
    raw_pos = int(st[o + 6])
    st[o + 4] = st[o + 4] + raw - st[raw_ring + raw_pos]
    st[raw_ring + raw_pos] = raw
    st[o + 6] = raw_pos + 1 if raw_pos + 1 < k_smooth else 0
    n_raw = int(st[o + 8]) + 1
    st[o + 8] = n_raw
    if n_raw < k_smooth:
        return NAN, NAN
    kv = st[o + 4] * (1.0 / k_smooth)
    k_pos = int(st[o + 7])
    st[o + 5] = st[o + 5] + kv - st[k_ring + k_pos]
    st[k_ring + k_pos] = kv
    st[o + 7] = k_pos + 1 if k_pos + 1 < d_period else 0
    if n_raw < k_smooth + d_period - 1:
        return NAN, NAN
    return kv, st[o + 5] * (1.0 / d_period)


# ----------------------------------------------------------------------------------------------- ATR
def atr_initial(n: int = 14) -> np.ndarray:
    """Layout: [n, count, previous close, seed total, value]."""
    return np.array([check_period("n", n), 0.0, 0.0, 0.0, 0.0])


@njit(**_JIT)
def atr_step(st, o, high, low, close):
    n = int(st[o])
    i = int(st[o + 1])
    st[o + 1] = i + 1
    prev_close = st[o + 2]
    st[o + 2] = close
    if i == 0:
        return NAN
    tr = true_range(high, low, prev_close)
    if i < n:
        st[o + 3] += tr
        return NAN
    if i == n:
        value = (st[o + 3] + tr) / n
    else:
        inv_n, decay = wilder_weights(n)
        value = smooth(st[o + 4], tr, decay, inv_n)
    st[o + 4] = value
    return value


# ----------------------------------------------------------------------------------------- Bollinger
def bollinger_initial(n: int = 20, k: float = 2.0) -> np.ndarray:
    """Layout: [k, rolling sums of close and close² (see :func:`rolling_initial`)]."""
    return np.concatenate(([check_multiplier("k", k)], rolling_initial(n)))


@njit(**_JIT)
def bollinger_step(st, o, close):
    """(middle, upper, lower, %B, bandwidth)."""
    r = o + 1
    if not rolling_push(st, r, close, close * close):
        return NAN, NAN, NAN, NAN, NAN
    inv_n = 1.0 / st[r]
    mean = st[r + 2] * inv_n
    spread = band_spread(mean, st[r + 3] * inv_n, st[o])
    upper = mean + spread
    lower = mean - spread
    return mean, upper, lower, band_percent_b(close, upper, lower), (upper - lower) / mean


# ------------------------------------------------------------------------------------------- Keltner
def keltner_initial(n: int = 20, atr_period: int = 10, k: float = 2.0) -> np.ndarray:
    """Layout: [k, EMA block of the typical price (4), ATR block (5)]."""
    check_period("atr_period", atr_period)
    return np.concatenate(([check_multiplier("k", k)], ema_initial(n), atr_initial(atr_period)))


@njit(**_JIT)
def keltner_step(st, o, high, low, close):
    """(middle, upper, lower)."""
    middle = ema_step(st, o + 1, typical_price(high, low, close))
    spread = st[o] * atr_step(st, o + 5, high, low, close)
    return middle, middle + spread, middle - spread


# ----------------------------------------------------------------------------------------------- ADX
def adx_initial(n: int = 14) -> np.ndarray:
    """Layout: [n, count, prev high, prev low, prev close, +DM sum, −DM sum, TR sum, DX total, ADX]."""
    block = np.zeros(10)
    block[0] = check_period("n", n)
    return block


@njit(**_JIT)
def adx_step(st, o, high, low, close):
    """(ADX, +DI, −DI)."""
    n = int(st[o])
    i = int(st[o + 1])
    st[o + 1] = i + 1
    prev_high, prev_low, prev_close = st[o + 2], st[o + 3], st[o + 4]
    st[o + 2], st[o + 3], st[o + 4] = high, low, close
    if i == 0:
        return NAN, NAN, NAN
    p, m = directional_move(high, low, prev_high, prev_low)
    t = true_range(high, low, prev_close)
    if i < n:
        st[o + 5] += p
        st[o + 6] += m
        st[o + 7] += t
        return NAN, NAN, NAN
    decay = (n - 1) / n
    plus_dm = smooth(st[o + 5], p, decay, 1.0)
    minus_dm = smooth(st[o + 6], m, decay, 1.0)
    tr = smooth(st[o + 7], t, decay, 1.0)
    st[o + 5], st[o + 6], st[o + 7] = plus_dm, minus_dm, tr
    plus_di, minus_di, dx = di_and_dx(plus_dm, minus_dm, tr)
    value = st[o + 9]
    if i < 2 * n:
        if not math.isnan(dx):
            st[o + 8] += dx
        if i < 2 * n - 1:
            return NAN, plus_di, minus_di
        value = st[o + 8] / n
    elif not math.isnan(dx):
        value = smooth(value, dx, decay, 1.0 / n)
    st[o + 9] = value
    return value, plus_di, minus_di


# ---------------------------------------------------------------------------------------------- VWAP
def vwap_rolling_initial(n: int = 24) -> np.ndarray:
    """Layout: [n, count, block prefix of price·volume, block prefix of volume, rings of price·volume and
    volume (n each)] — the ring/total layout of :func:`rolling_initial`, with the totals as block prefixes."""
    return rolling_initial(n)


@njit(**_JIT)
def vwap_rolling_step(st, o, high, low, close, volume):
    """The batch kernel's block decomposition: the window is the current block's prefix (kept here) plus
    the previous block's suffix, summed from the ring latest bar first exactly as the batch kernel does."""
    n = int(st[o])
    typical = typical_price(high, low, close)
    i, _, _ = ring_push(st, o, typical * volume, volume)
    offset = i % n
    if offset == 0:
        st[o + 2] = 0.0
        st[o + 3] = 0.0
    st[o + 2] += typical * volume
    st[o + 3] += volume
    if i < n - 1:
        return NAN
    if offset == n - 1:
        return volume_weighted(st[o + 2], st[o + 3], typical)
    pv = 0.0
    vol = 0.0
    for j in range(i - offset - 1, i - n, -1):  # previous block, latest bar first, down to the window start
        slot = o + 4 + j % n
        pv += st[slot]
        vol += st[slot + n]
    return volume_weighted(pv + st[o + 2], vol + st[o + 3], typical)


def vwap_session_initial() -> np.ndarray:
    """Layout: [price·volume since the session start, volume since the session start]."""
    return np.zeros(2)


@njit(**_JIT)
def vwap_session_step(st, o, high, low, close, volume, new_session):
    if new_session:
        st[o] = 0.0
        st[o + 1] = 0.0
    typical = typical_price(high, low, close)
    st[o] += typical * volume
    st[o + 1] += volume
    return volume_weighted(st[o], st[o + 1], typical)


# ----------------------------------------------------------------------------------------- log return
def log_return_initial() -> np.ndarray:
    """Layout: [count, previous close]."""
    return np.zeros(2)


@njit(**_JIT)
def log_return_step(st, o, close):
    i = st[o]
    st[o] = i + 1.0
    prev = st[o + 1]
    st[o + 1] = close
    return math.log(close / prev) if i > 0 else NAN


# ------------------------------------------------------------------------------- one-indicator wrappers
class _StreamingIndicator:
    """One indicator's state block plus a scratch copy for revising the still-open bar. Subclasses name their
    step and initial-state functions; constructor arguments go to the latter, which validates them."""

    _step = None  # the @njit step, called as step(state, 0, *inputs)
    _initial = None  # builds the state block from the indicator's parameters

    def __init__(self, *args, **kwargs):
        self._state = type(self)._initial(*args, **kwargs)
        self._scratch = np.empty_like(self._state)
        self.n_bars = 0

    def update(self, *inputs):
        """Consume a closed bar; returns the indicator's value(s) at that bar (NaN during warm-up)."""
        out = type(self)._step(self._state, 0, *inputs)
        self.n_bars += 1
        return out

    def revise(self, *inputs):
        """Value(s) if the still-open bar closed now with these inputs; the state is left unchanged, so call
        this as often as the open bar changes and :meth:`update` once when it closes."""
        self._scratch[:] = self._state
        return type(self)._step(self._scratch, 0, *inputs)


class StreamingSMA(_StreamingIndicator):
    """``StreamingSMA(n)``; ``update(x) -> float``, equal to :func:`.indicators.sma`."""

    _step, _initial = sma_step, staticmethod(sma_initial)


class StreamingEMA(_StreamingIndicator):
    """``StreamingEMA(n)``; ``update(x) -> float``, equal to :func:`.indicators.ema`."""

    _step, _initial = ema_step, staticmethod(ema_initial)


class StreamingRSI(_StreamingIndicator):
    """``StreamingRSI(n=14)``; ``update(close) -> float``, equal to :func:`.indicators.rsi`."""

    _step, _initial = rsi_step, staticmethod(rsi_initial)


class StreamingMACD(_StreamingIndicator):
    """``StreamingMACD(fast=12, slow=26, signal=9)``; ``update(close) -> (line, signal, hist)``, equal to
    :func:`.indicators.macd`."""

    _step, _initial = macd_step, staticmethod(macd_initial)


class StreamingStochastic(_StreamingIndicator):
    """``StreamingStochastic(k_period=14, k_smooth=3, d_period=3)``; ``update(high, low, close) -> (%K, %D)``,
    equal to :func:`.indicators.stochastic`."""

    _step, _initial = stochastic_step, staticmethod(stochastic_initial)


class StreamingATR(_StreamingIndicator):
    """``StreamingATR(n=14)``; ``update(high, low, close) -> float``, equal to :func:`.indicators.atr`."""

    _step, _initial = atr_step, staticmethod(atr_initial)


class StreamingBollinger(_StreamingIndicator):
    """``StreamingBollinger(n=20, k=2.0)``; ``update(close) -> (middle, upper, lower, %B, bandwidth)``, equal
    to :func:`.indicators.bollinger` and its %B / bandwidth helpers."""

    _step, _initial = bollinger_step, staticmethod(bollinger_initial)


class StreamingKeltner(_StreamingIndicator):
    """``StreamingKeltner(n=20, atr_period=10, k=2.0)``; ``update(high, low, close) -> (middle, upper,
    lower)``, equal to :func:`.indicators.keltner`."""

    _step, _initial = keltner_step, staticmethod(keltner_initial)


class StreamingADX(_StreamingIndicator):
    """``StreamingADX(n=14)``; ``update(high, low, close) -> (ADX, +DI, −DI)``, equal to
    :func:`.indicators.adx`."""

    _step, _initial = adx_step, staticmethod(adx_initial)


class StreamingVWAP(_StreamingIndicator):
    """``StreamingVWAP(n=24)``; ``update(high, low, close, volume) -> float``, equal to
    :func:`.indicators.vwap_rolling`."""

    _step, _initial = vwap_rolling_step, staticmethod(vwap_rolling_initial)


class StreamingSessionVWAP(_StreamingIndicator):
    """``StreamingSessionVWAP()``; ``update(high, low, close, volume, new_session: bool) -> float``, equal to
    :func:`.indicators.vwap_session`."""

    _step, _initial = vwap_session_step, staticmethod(vwap_session_initial)


class StreamingLogReturn(_StreamingIndicator):
    """``StreamingLogReturn()``; ``update(close) -> float``, equal to :func:`.indicators.log_returns` (lag 1)."""

    _step, _initial = log_return_step, staticmethod(log_return_initial)


__all__ = [
    "StreamingADX",
    "StreamingATR",
    "StreamingBollinger",
    "StreamingEMA",
    "StreamingKeltner",
    "StreamingLogReturn",
    "StreamingMACD",
    "StreamingRSI",
    "StreamingSMA",
    "StreamingSessionVWAP",
    "StreamingStochastic",
    "StreamingVWAP",
]
