"""Batch technical indicators over float64 price arrays, compiled with numba.

Every public function validates its arguments in Python (a clear ``ValueError`` naming the argument), converts
them to contiguous float64 once (so each kernel compiles for one signature only) and runs one ``@njit`` kernel.
Kernels are compiled on first call and cached on disk (``cache=True``); nothing is compiled at import time.

Outputs are NaN during the warm-up ("lookback") and at the same positions as TA-Lib where TA-Lib defines the
indicator (SMA, EMA, RSI, MACD, STOCH, ATR, BBANDS, ADX/PLUS_DI/MINUS_DI), with TA-Lib's seeding: EMA seeded by
the SMA of its first ``n`` inputs, Wilder smoothing for RSI/ATR/ADX seeded by simple sums, MACD's fast EMA
seeded so that it starts on the slow EMA's first bar, population standard deviation in Bollinger bands.
Values agree with the installed ``talib`` to ~1e-12 relative (the tests require 1e-9). Deliberate differences:

- recursive smoothing is one multiply-add ``value·(1−w) + x·w`` with precomputed weights instead of TA-Lib's
  ``(value·(n−1) + x)/n`` (a few-ulp difference; one FMA instead of three dependent operations per bar);
- NaN/inf inputs are not skipped (TA-Lib skips leading NaNs); they propagate into the outputs. Check data
  with :func:`convnext_fast.checks.check_finite` (the feature pipeline does) — a NaN inside a price series is a data bug;
- SMA/Bollinger rolling sums are updated incrementally and recomputed exactly every ``RESYNC_BARS`` bars
  (no drift); the rolling VWAP sums its windows without subtraction (exact zeros for zero-volume windows);
- Stochastic %K multiplies by reciprocals where TA-Lib divides (≤ 1 ulp);
- Keltner channels and VWAP are not in TA-Lib and follow the usual definitions documented on each function.

The streaming twins in :mod:`convnext_fast.features.streaming` perform the same floating-point operations in
the same order, so they reproduce these outputs bar for bar.

Developers: numba's on-disk cache is keyed on each function's own source file, so a function in another file
that calls (and inlines) an edited one keeps its stale compiled code. After editing this module or
``streaming.py``, delete ``features/__pycache__/*.nbi`` and ``*.nbc``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

NAN = math.nan
# TA-Lib's zero band (TA_EPSILON): a denominator this close to zero (absolute, or relative to the operands of a
# difference) yields 0 instead of a division.
TA_EPSILON = 1e-14

_JIT = {"cache": True, "nogil": True}


# ------------------------------------------------------------------------------- scalar steps (shared)
# These few scalar functions are the only arithmetic shared by the batch kernels below and the streaming
# states, so both perform the same floating-point operations and agree bar for bar.
@intrinsic
def fma(typingctx, a, b, c):
    """a·b + c with one rounding (LLVM's fma intrinsic: one instruction on FMA hardware). Explicit rather than
    left to fastmath contraction, which fuses differently depending on the surrounding code and would break
    the bit-for-bit agreement of batch kernels and streaming steps."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [double], ir.FunctionType(double, [double] * 3))
        return builder.call(fn, args)

    return sig, codegen


@njit(**_JIT)
def smooth(value, x, decay, weight):
    """One recursive smoothing step ``value·decay + x·weight`` (EMA: 1−k, k; Wilder average: (n−1)/n, 1/n;
    Wilder sum: (n−1)/n, 1). One FMA on the dependency chain, half the latency of a multiply then an add."""
    return fma(value, decay, x * weight)


@njit(**_JIT)
def wilder_weights(n):
    """(1/n, (n−1)/n): the weights of Wilder's average."""
    inv_n = 1.0 / n
    return inv_n, (n - 1) * inv_n


@njit(**_JIT)
def true_range(high, low, prev_close):
    top = high if high > prev_close else prev_close
    bottom = low if low < prev_close else prev_close
    return top - bottom


@njit(**_JIT)
def typical_price(high, low, close):
    return (high + low + close) / 3.0


@njit(**_JIT)
def directional_move(high, low, prev_high, prev_low):
    """Wilder's +DM and −DM of one bar (at most one of them is non-zero)."""
    up = high - prev_high
    down = prev_low - low
    plus = up if (up > 0.0 and up > down) else 0.0
    minus = down if (down > 0.0 and down > up) else 0.0
    return plus, minus


@njit(**_JIT)
def di_and_dx(plus_dm, minus_dm, tr):
    """(+DI, −DI, DX) from Wilder sums; like TA-Lib, a zero true range gives DIs of 0 and no DX (NaN)."""
    if abs(tr) < TA_EPSILON:
        return 0.0, 0.0, NAN
    plus_di = 100.0 * (plus_dm / tr)
    minus_di = 100.0 * (minus_dm / tr)
    both = plus_di + minus_di
    dx = 100.0 * (abs(minus_di - plus_di) / both) if abs(both) >= TA_EPSILON else NAN
    return plus_di, minus_di, dx


@njit(**_JIT)
def rsi_value(gain, loss):
    both = gain + loss
    return 100.0 * (gain / both) if abs(both) >= TA_EPSILON else 0.0


@njit(**_JIT)
def stoch_raw_k(close, highest, lowest):
    """Raw %K in [0, 100]; 0 for a window flat to within TA-Lib's scaled epsilon, as TA-Lib answers."""
    span = highest - lowest
    if abs(span) <= TA_EPSILON * (abs(highest) + abs(lowest)):
        return 0.0
    return 100.0 * (close - lowest) / span


@njit(**_JIT)
def band_spread(mean, mean_sq, k):
    """k · population std from the window mean and mean of squares. Like TA-Lib's scale-aware zero test, a
    variance within TA_EPSILON of its operands' magnitude is the rounding residue of a flat window: 0."""
    mean_2 = mean * mean
    variance = mean_sq - mean_2
    return k * math.sqrt(variance) if variance > TA_EPSILON * (mean_sq + mean_2) else 0.0


@njit(**_JIT)
def band_percent_b(close, upper, lower):
    """(close − lower)/(upper − lower); 0.5 when the bands touch (a flat window), NaN while they are NaN."""
    width = upper - lower
    if width > 0.0:
        return (close - lower) / width
    return 0.5 if width == 0.0 else NAN


@njit(**_JIT)
def volume_weighted(pv, volume, fallback):
    return pv / volume if volume > 0.0 else fallback


# ----------------------------------------------------------------------------------------------- kernels
# Kernels write into output arrays the caller allocates with numpy: numpy asks the OS for huge pages on large
# arrays, while an allocation inside numba faults in every 4 KiB page (measured on 1e6 bars: MACD 22 ms with
# numba-allocated outputs, 2.9 ms with numpy-allocated ones).
# Rolling sums are updated as ``total += new − old`` and recomputed exactly (oldest first) every
# RESYNC_BARS bars, so rounding drift cannot accumulate over millions of bars; the streaming states resync
# on the same bar counts.
RESYNC_BARS = 1024


@njit(**_JIT)
def _nan_head(out, lookback):
    """NaN-fill the warm-up; returns whether any bar is past it."""
    out[: min(lookback, out.shape[0])] = NAN
    return lookback < out.shape[0]


@njit(**_JIT)
def _rolling_mean_into(x, n, out):
    """SMA of x into out (from index n − 1); the caller has NaN-filled the head."""
    size = x.shape[0]
    inv_n = 1.0 / n
    total = 0.0
    for i in range(size):
        if i < n or i % RESYNC_BARS == 0:
            if i >= n:
                total = 0.0
                for j in range(i - n + 1, i + 1):
                    total += x[j]
            else:
                total += x[i]
        else:
            total += x[i] - x[i - n]
        if i >= n - 1:
            out[i] = total * inv_n


@njit(**_JIT)
def sma_kernel(x, n, out):
    _nan_head(out, n - 1)
    _rolling_mean_into(x, n, out)


@njit(**_JIT)
def ema_kernel(x, n, out):
    size = x.shape[0]
    _nan_head(out, n - 1)
    if size < n:
        return
    k = 2.0 / (n + 1)
    decay = 1.0 - k
    total = 0.0
    for i in range(n):
        total += x[i]
    value = total / n
    out[n - 1] = value
    for i in range(n, size):
        value = smooth(value, x[i], decay, k)
        out[i] = value


@njit(**_JIT)
def rsi_kernel(x, n, out):
    if not _nan_head(out, n):
        return
    size = x.shape[0]
    inv_n, decay = wilder_weights(n)
    gain = 0.0
    loss = 0.0
    for i in range(1, n + 1):
        change = x[i] - x[i - 1]
        if change < 0.0:
            loss -= change
        else:
            gain += change
    gain /= n
    loss /= n
    out[n] = rsi_value(gain, loss)
    for i in range(n + 1, size):
        change = x[i] - x[i - 1]
        gain = smooth(gain, max(change, 0.0), decay, inv_n)
        loss = smooth(loss, max(-change, 0.0), decay, inv_n)
        out[i] = rsi_value(gain, loss)


@njit(**_JIT)
def macd_kernel(x, fast, slow, signal, line, sig, hist):
    """One pass: slow EMA from bar 0, fast EMA seeded by the SMA of the ``fast`` bars ending on the slow EMA's
    first bar (TA-Lib's MACD seeding), signal EMA seeded by the SMA of the first ``signal`` MACD values."""
    size = x.shape[0]
    first = slow + signal - 2
    _nan_head(line, first)
    _nan_head(sig, first)
    _nan_head(hist, first)
    if size < slow:
        return
    k_slow, k_fast, k_sig = 2.0 / (slow + 1), 2.0 / (fast + 1), 2.0 / (signal + 1)
    slow_total = 0.0
    fast_total = 0.0
    for i in range(slow):
        slow_total += x[i]
        if i >= slow - fast:
            fast_total += x[i]
    s = slow_total / slow
    f = fast_total / fast
    sig_total = 0.0
    g = 0.0
    for i in range(slow - 1, size):
        if i >= slow:
            s = smooth(s, x[i], 1.0 - k_slow, k_slow)
            f = smooth(f, x[i], 1.0 - k_fast, k_fast)
        m = f - s
        if i < first:
            sig_total += m
            continue
        g = (sig_total + m) / signal if i == first else smooth(g, m, 1.0 - k_sig, k_sig)
        line[i] = m
        sig[i] = g
        hist[i] = m - g


@njit(**_JIT)
def _block_suffix_extreme(x, k, want_max, out):
    """out[j] = max (or min) of x[j .. end of j's block], blocks of k bars from bar 0 (van Herk/Gil-Werman)."""
    size = x.shape[0]
    for block in range(0, size, k):
        best = x[min(block + k, size) - 1]
        for j in range(min(block + k, size) - 1, block - 1, -1):
            best = max(best, x[j]) if want_max else min(best, x[j])
            out[j] = best


@njit(**_JIT)
def _smoothed_into(x, shift, first, n, out):
    """out[i] = mean of bars i−n+1 .. i of a series whose bar j is stored at x[j − shift], for
    i ≥ first + n − 1, as the running total ``(total + new) − evicted`` with evicted bars before ``first``
    taken as 0 — the exact arithmetic of the streaming ring."""
    inv_n = 1.0 / n
    total = 0.0
    for i in range(first, out.shape[0]):
        old = x[i - n - shift] if i - n >= first else 0.0
        total = total + x[i - shift] - old
        if i >= first + n - 1:
            out[i] = total * inv_n


@njit(**_JIT)
def stoch_kernel(high, low, close, k_period, k_smooth, d_period, slow_k, slow_d):
    """Raw %K from rolling extremes, then two SMAs. The window extremes use van Herk/Gil-Werman (a block
    suffix pass, then a running block prefix): branch-free, where TA-Lib's rescan of an expired extreme
    mispredicts on most random-walk bars. Extremes are exact, so this agrees with any other way to find them.

    No scratch memory (first-touch page faults of extra arrays cost more than the arithmetic): the suffix
    extremes of high and low live in ``slow_d`` and ``slow_k``; the raw %K of bar i overwrites the suffix
    slot it has just consumed, i − k_period + 1; its SMA then goes to ``slow_k`` and the SMA of that to
    ``slow_d``."""
    size = close.shape[0]
    first = k_period + k_smooth + d_period - 3
    shift = k_period - 1
    _block_suffix_extreme(high, k_period, True, slow_d)
    _block_suffix_extreme(low, k_period, False, slow_k)
    hi_prefix = 0.0
    lo_prefix = 0.0
    in_block = 0
    for i in range(size):
        if in_block == 0:
            hi_prefix = high[i]
            lo_prefix = low[i]
        else:
            hi_prefix = max(hi_prefix, high[i])
            lo_prefix = min(lo_prefix, low[i])
        in_block = in_block + 1 if in_block + 1 < k_period else 0
        if i >= shift:
            hi = max(slow_d[i - shift], hi_prefix)
            lo = min(slow_k[i - shift], lo_prefix)
            slow_d[i - shift] = stoch_raw_k(close[i], hi, lo)
    _smoothed_into(slow_d, shift, shift, k_smooth, slow_k)
    _smoothed_into(slow_k, 0, shift + k_smooth - 1, d_period, slow_d)
    _nan_head(slow_k, first)
    _nan_head(slow_d, first)


@njit(**_JIT)
def atr_kernel(high, low, close, n, out):
    if not _nan_head(out, n):
        return
    inv_n, decay = wilder_weights(n)
    size = close.shape[0]
    total = 0.0
    for i in range(1, n + 1):
        total += true_range(high[i], low[i], close[i - 1])
    value = total / n
    out[n] = value
    for i in range(n + 1, size):
        value = smooth(value, true_range(high[i], low[i], close[i - 1]), decay, inv_n)
        out[i] = value


@njit(**_JIT)
def bollinger_kernel(x, n, k, middle, upper, lower):
    size = x.shape[0]
    for out in (middle, upper, lower):
        _nan_head(out, n - 1)
    inv_n = 1.0 / n
    total = 0.0
    total_sq = 0.0
    for i in range(size):
        if i < n:
            total += x[i]
            total_sq += x[i] * x[i]
        elif i % RESYNC_BARS == 0:
            total = 0.0
            total_sq = 0.0
            for j in range(i - n + 1, i + 1):
                total += x[j]
                total_sq += x[j] * x[j]
        else:
            old = x[i - n]
            total += x[i] - old
            total_sq += x[i] * x[i] - old * old
        if i >= n - 1:
            mean = total * inv_n
            spread = band_spread(mean, total_sq * inv_n, k)
            middle[i] = mean
            upper[i] = mean + spread
            lower[i] = mean - spread


@njit(**_JIT)
def percent_b_kernel(close, upper, lower, out):
    for i in range(close.shape[0]):
        out[i] = band_percent_b(close[i], upper[i], lower[i])


@njit(**_JIT)
def keltner_kernel(high, low, close, n, atr_period, k, middle, upper, lower):
    """``upper`` holds the typical price and ``lower`` the ATR until the bands are formed in place."""
    for i in range(close.shape[0]):
        upper[i] = typical_price(high[i], low[i], close[i])
    ema_kernel(upper, n, middle)
    atr_kernel(high, low, close, atr_period, lower)
    for i in range(close.shape[0]):
        spread = k * lower[i]
        upper[i] = middle[i] + spread
        lower[i] = middle[i] - spread


@njit(**_JIT)
def adx_kernel(high, low, close, n, adx, plus_di, minus_di):
    size = close.shape[0]
    _nan_head(adx, 2 * n - 1)
    _nan_head(plus_di, n)
    _nan_head(minus_di, n)
    decay = (n - 1) / n
    plus_dm = 0.0
    minus_dm = 0.0
    tr = 0.0
    dx_total = 0.0
    value = 0.0
    for i in range(1, size):
        p, m = directional_move(high[i], low[i], high[i - 1], low[i - 1])
        t = true_range(high[i], low[i], close[i - 1])
        if i < n:
            plus_dm += p
            minus_dm += m
            tr += t
            continue
        plus_dm = smooth(plus_dm, p, decay, 1.0)
        minus_dm = smooth(minus_dm, m, decay, 1.0)
        tr = smooth(tr, t, decay, 1.0)
        plus_di[i], minus_di[i], dx = di_and_dx(plus_dm, minus_dm, tr)
        if i < 2 * n:
            if not math.isnan(dx):
                dx_total += dx
            if i == 2 * n - 1:
                value = dx_total / n
                adx[i] = value
        else:
            if not math.isnan(dx):
                value = smooth(value, dx, decay, 1.0 / n)
            adx[i] = value


@njit(**_JIT)
def vwap_rolling_kernel(high, low, close, volume, n, out):
    """Window sums without subtraction, so a window of zero-volume bars sums to exactly 0 (an incremental
    ``+ new − old`` leaves a rounding residue the VWAP would divide by): with blocks of n bars from bar 0,
    a window is the current block's prefix plus a suffix of the previous block (van Herk/Gil-Werman for
    sums). The previous block's suffix sums are built once per block, latest bar first."""
    size = close.shape[0]
    _nan_head(out, n - 1)
    suffix_pv = np.empty(n)
    suffix_v = np.empty(n)
    prefix_pv = 0.0
    prefix_v = 0.0
    for i in range(size):
        offset = i % n
        if offset == 0:
            prefix_pv = 0.0
            prefix_v = 0.0
            pv = 0.0
            vol = 0.0
            for j in range(i - 1, max(i - n, 0) - 1, -1):
                pv += typical_price(high[j], low[j], close[j]) * volume[j]
                vol += volume[j]
                suffix_pv[j - (i - n)] = pv
                suffix_v[j - (i - n)] = vol
        typical = typical_price(high[i], low[i], close[i])
        prefix_pv += typical * volume[i]
        prefix_v += volume[i]
        if i < n - 1:
            continue
        if offset == n - 1:
            out[i] = volume_weighted(prefix_pv, prefix_v, typical)
        else:
            k = offset + 1  # window start i − n + 1 sits at this index of the previous block
            out[i] = volume_weighted(suffix_pv[k] + prefix_pv, suffix_v[k] + prefix_v, typical)


@njit(**_JIT)
def vwap_session_kernel(high, low, close, volume, new_session, out):
    size = close.shape[0]
    pv = 0.0
    vol = 0.0
    for i in range(size):
        if new_session[i]:
            pv = 0.0
            vol = 0.0
        typical = typical_price(high[i], low[i], close[i])
        pv += typical * volume[i]
        vol += volume[i]
        out[i] = volume_weighted(pv, vol, typical)


@njit(**_JIT)
def log_ratio_kernel(numerator, denominator, lag, out):
    """log(numerator[t] / denominator[t − lag]); NaN for the first ``lag`` bars."""
    _nan_head(out, lag)
    for i in range(lag, numerator.shape[0]):
        out[i] = math.log(numerator[i] / denominator[i - lag])


# -------------------------------------------------------------------------------------- argument checks
def as_series(name: str, values) -> np.ndarray:
    """``values`` as a contiguous 1-D float64 array (no copy when it already is one), or a ValueError naming
    ``name``. Finiteness is not checked here: a full extra pass would cost as much as a whole indicator
    (see :func:`convnext_fast.checks.check_finite`, which the feature pipeline applies)."""
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def check_period(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_multiplier(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def as_series_set(**named) -> list[np.ndarray]:
    """Several equal-length series (e.g. high, low, close), each checked as in :func:`as_series`."""
    arrays = [as_series(name, values) for name, values in named.items()]
    lengths = {name: arr.shape[0] for name, arr in zip(named, arrays, strict=True)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"series must have equal lengths, got {lengths}")
    return arrays


# ---------------------------------------------------------------------------------------- public API
def _run(kernel, n_outputs: int, size: int, *args):
    """Allocate the outputs with numpy, let the kernel fill them, return one array or a tuple."""
    outs = tuple(np.empty(size) for _ in range(n_outputs))
    kernel(*args, *outs)
    return outs[0] if n_outputs == 1 else outs


def sma(x, n: int, *, name: str = "x") -> np.ndarray:
    """Simple moving average (TA-Lib SMA); NaN for the first ``n - 1`` bars."""
    x = as_series(name, x)
    return _run(sma_kernel, 1, x.shape[0], x, check_period("n", n))


def volume_sma(volume, n: int = 20) -> np.ndarray:
    """Simple moving average of volume (TA-Lib SMA)."""
    return sma(volume, n, name="volume")


def ema(x, n: int) -> np.ndarray:
    """Exponential moving average, k = 2/(n+1), seeded by the SMA of the first ``n`` values (TA-Lib EMA)."""
    x = as_series("x", x)
    return _run(ema_kernel, 1, x.shape[0], x, check_period("n", n))


def rsi(close, n: int = 14) -> np.ndarray:
    """Wilder's RSI in [0, 100] (TA-Lib RSI); NaN for the first ``n`` bars."""
    c = as_series("close", close)
    return _run(rsi_kernel, 1, c.shape[0], c, check_period("n", n))


def check_macd_periods(fast, slow, signal) -> tuple[int, int, int]:
    fast, slow = check_period("fast", fast), check_period("slow", slow, 2)
    if fast >= slow:
        raise ValueError(f"fast must be < slow, got fast={fast}, slow={slow}")
    return fast, slow, check_period("signal", signal)


def macd(close, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MACD line, signal line, histogram) as TA-Lib MACD; NaN for the first ``slow + signal - 2`` bars."""
    c = as_series("close", close)
    return _run(macd_kernel, 3, c.shape[0], c, *check_macd_periods(fast, slow, signal))


def check_stochastic_periods(k_period, k_smooth, d_period) -> tuple[int, int, int]:
    return (
        check_period("k_period", k_period),
        check_period("k_smooth", k_smooth),
        check_period("d_period", d_period),
    )


def stochastic(
    high, low, close, k_period: int = 14, k_smooth: int = 3, d_period: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Slow stochastic (%K, %D) in [0, 100] with SMA smoothing (TA-Lib STOCH); both NaN for the first
    ``k_period + k_smooth + d_period - 3`` bars. A flat window (high == low) gives a raw %K of 0 like TA-Lib."""
    h, lo, c = as_series_set(high=high, low=low, close=close)
    periods = check_stochastic_periods(k_period, k_smooth, d_period)
    return _run(stoch_kernel, 2, c.shape[0], h, lo, c, *periods)


def atr(high, low, close, n: int = 14) -> np.ndarray:
    """Wilder's average true range (TA-Lib ATR); NaN for the first ``n`` bars."""
    h, lo, c = as_series_set(high=high, low=low, close=close)
    return _run(atr_kernel, 1, c.shape[0], h, lo, c, check_period("n", n))


def bollinger(close, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(middle, upper, lower): the SMA ± k·population std (TA-Lib BBANDS with nbdevup = nbdevdn = k)."""
    c = as_series("close", close)
    return _run(bollinger_kernel, 3, c.shape[0], c, check_period("n", n), check_multiplier("k", k))


def bollinger_percent_b(close, upper, lower) -> np.ndarray:
    """%B = (close − lower)/(upper − lower): 0 on the lower band, 1 on the upper (0.5 when they touch)."""
    c, u, lo = as_series_set(close=close, upper=upper, lower=lower)
    return _run(percent_b_kernel, 1, c.shape[0], c, u, lo)


def bollinger_bandwidth(middle, upper, lower) -> np.ndarray:
    """Bandwidth = (upper − lower)/middle."""
    m, u, lo = as_series_set(middle=middle, upper=upper, lower=lower)
    return (u - lo) / m


def keltner(
    high, low, close, n: int = 20, atr_period: int = 10, k: float = 2.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(middle, upper, lower): EMA(n) of the typical price (h+l+c)/3 ± k·ATR(atr_period). Not in TA-Lib; built
    from its EMA and ATR, so NaN for the first ``max(n - 1, atr_period)`` bars."""
    h, lo, c = as_series_set(high=high, low=low, close=close)
    params = (check_period("n", n), check_period("atr_period", atr_period), check_multiplier("k", k))
    return _run(keltner_kernel, 3, c.shape[0], h, lo, c, *params)


def adx(high, low, close, n: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ADX, +DI, −DI) as TA-Lib ADX, PLUS_DI and MINUS_DI; ADX is NaN for the first ``2n − 1`` bars, the
    DIs for the first ``n``."""
    h, lo, c = as_series_set(high=high, low=low, close=close)
    return _run(adx_kernel, 3, c.shape[0], h, lo, c, check_period("n", n))


def vwap_rolling(high, low, close, volume, n: int = 24) -> np.ndarray:
    """Volume-weighted average of the typical price over the last ``n`` bars (NaN for the first ``n − 1``).
    A window without volume gives the bar's typical price."""
    h, lo, c, v = as_series_set(high=high, low=low, close=close, volume=volume)
    return _run(vwap_rolling_kernel, 1, c.shape[0], h, lo, c, v, check_period("n", n))


def session_starts(start_ms, session_ms: int = 86_400_000) -> np.ndarray:
    """Boolean mask of bars that open a new session (a new UTC day by default): the first bar, and every bar
    whose ``start_ms // session_ms`` differs from the previous bar's."""
    starts = np.asarray(start_ms)
    if starts.ndim != 1 or not np.issubdtype(starts.dtype, np.integer):
        raise ValueError(
            f"start_ms must be a 1-D integer array of epoch milliseconds, got {starts.dtype} {starts.shape}"
        )
    session = starts // check_period("session_ms", session_ms)
    mask = np.ones(starts.shape[0], dtype=np.bool_)
    mask[1:] = session[1:] != session[:-1]
    return mask


def vwap_session(high, low, close, volume, new_session) -> np.ndarray:
    """VWAP of the typical price accumulated since the last bar flagged in ``new_session`` (see
    :func:`session_starts`); bars before the first flag accumulate from the start of the series."""
    h, lo, c, v = as_series_set(high=high, low=low, close=close, volume=volume)
    flags = np.ascontiguousarray(new_session, dtype=np.bool_)
    if flags.shape != c.shape:
        raise ValueError(f"new_session must have shape {c.shape}, got {flags.shape}")
    return _run(vwap_session_kernel, 1, c.shape[0], h, lo, c, v, flags)


def _check_positive(**named: np.ndarray) -> None:
    for name, arr in named.items():
        if (arr <= 0).any():
            raise ValueError(f"{name} must be positive (prices), found {arr.min()}")


def log_returns(close, lag: int = 1) -> np.ndarray:
    """log(close[t] / close[t − lag]); NaN for the first ``lag`` bars. Prices must be positive."""
    c = as_series("close", close)
    _check_positive(close=c)
    return _run(log_ratio_kernel, 1, c.shape[0], c, c, check_period("lag", lag))


def normalized_ohlc(open, high, low, close) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Scale-free candle shape: (log(open/close), log(high/close), log(low/close), log(close/prev close))."""
    o, h, lo, c = as_series_set(open=open, high=high, low=low, close=close)
    _check_positive(open=o, high=h, low=lo, close=c)
    size = c.shape[0]
    return (
        _run(log_ratio_kernel, 1, size, o, c, 0),
        _run(log_ratio_kernel, 1, size, h, c, 0),
        _run(log_ratio_kernel, 1, size, lo, c, 0),
        _run(log_ratio_kernel, 1, size, c, c, 1),
    )


__all__ = [
    "adx",
    "atr",
    "bollinger",
    "bollinger_bandwidth",
    "bollinger_percent_b",
    "ema",
    "keltner",
    "log_returns",
    "macd",
    "normalized_ohlc",
    "rsi",
    "session_starts",
    "sma",
    "stochastic",
    "volume_sma",
    "vwap_rolling",
    "vwap_session",
]
