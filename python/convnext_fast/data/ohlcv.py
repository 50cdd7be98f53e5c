"""The one OHLCV validity rule, shared by CSV import, Bybit REST and WebSocket parsing, the store, the
backtest and the live loop, so that a bar one of them refuses is refused by all, with the same words.

A bar is valid when open/high/low/close are finite, > 0 and at most ``MAX_PRICE``; high ≥ max(open, close)
and low ≤ min(open, close); volume is finite and in [0, ``MAX_VOLUME``]; turnover is unknown (NaN) or in
[0, ``MAX_VOLUME``]; and, when a start time is given, it lies between 2009-01-01 and one day past now and
(when an interval is given) on an interval boundary.

Every problem reads ``"<kind>: <detail>"``; :func:`bar_problem` returns that text for one bar and
:func:`check_ohlcv` raises it for the first bad row of arrays as
``"<kind> at index <i> (<time>): <detail>; open=... (<n> bad rows in all)"``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from convnext_fast.data.intervals import check_interval, format_ms, next_start_ms
from convnext_fast.errors import UserError


class InvalidCandlesError(UserError, ValueError):
    """Candle data that breaks an invariant (ordering, OHLC consistency, finiteness); names the row."""


EARLIEST_MS = 1_230_768_000_000  # 2009-01-01 00:00 UTC: no crypto market data exists before
FUTURE_SLACK_MS = 86_400_000  # a start later than now + 1 day is a unit or clock mistake, not data
DAY_MS = 86_400_000
# Ceilings far above any traded asset (BTC ~1e5) or bar volume (meme coins ~1e13 tokens) that still stop a
# garbled 1e50 from reaching the features, where it overflows float32 and breaks a later division.
MAX_PRICE = 1e9
MAX_VOLUME = 1e18
PRICE_FIELDS = ("open", "high", "low", "close")


def latest_start_ms(now_ms: int | None = None) -> int:
    """Latest plausible candle start: ``now_ms`` (default: the local clock) plus one day."""
    return (int(time.time() * 1000) if now_ms is None else int(now_ms)) + FUTURE_SLACK_MS


def describe_ms(ms) -> str:
    """``format_ms`` for any value (it shows times no calendar can hold as raw epoch ms)."""
    return format_ms(ms)


def bar_problem(
    open: float,
    high: float,
    low: float,
    close: float,
    volume: float | None = None,
    turnover: float | None = None,
    *,
    start_ms: int | None = None,
    interval: str | None = None,
    now_ms: int | None = None,
) -> str | None:
    """Why one bar is invalid (``"<kind>: <detail>"``), or None. ``volume``/``turnover``/``start_ms`` None
    skip their checks; ``interval`` adds the alignment check, ``now_ms`` sets "now" (default: local clock)."""
    prices = {"open": open, "high": high, "low": low, "close": close}
    values = dict(prices) if volume is None else {**prices, "volume": volume}
    for name, value in values.items():
        if not _finite(value):
            return f"non-finite {name}: {name} has NaN/Inf ({value!r})"
    if turnover is not None and _is_inf(turnover):
        return f"non-finite turnover: turnover has Inf ({turnover!r})"
    for name, value in prices.items():
        if value <= 0:
            return f"non-positive {name}: {name} must be > 0, got {value!r}"
    for name, value in values.items():
        ceiling = MAX_PRICE if name in prices else MAX_VOLUME
        if value > ceiling:
            return f"implausible {name}: {name}={value!r} is above {ceiling:g}"
    if turnover is not None and turnover > MAX_VOLUME:
        return f"implausible turnover: turnover={turnover!r} is above {MAX_VOLUME:g}"
    if high < max(open, close):
        return "inconsistent bar: high/low do not bracket open/close (high < max(open, close))"
    if low > min(open, close):
        return "inconsistent bar: high/low do not bracket open/close (low > min(open, close))"
    if volume is not None and volume < 0:
        return f"negative volume: volume must be >= 0, got {volume!r}"
    if turnover is not None and turnover < 0:
        return f"negative turnover: turnover must be >= 0 or unknown, got {turnover!r}"
    if start_ms is not None:
        try:
            start_ms = int(start_ms)
        except (TypeError, ValueError, OverflowError):
            return f"start out of range: start {start_ms!r} is not a whole number of epoch ms"
        return time_problem(start_ms, interval, latest_start_ms(now_ms))
    return None


def jump_problem(prev_close: float, high: float, low: float, max_jump: float | None) -> str | None:
    """Why a bar moves too far from the previous close to be trusted live (None when within the limit or
    no limit): its extremes may stray at most a factor ``1 + max_jump`` either way (0.5: +50 % / -33 %)."""
    if max_jump is None or not (_finite(prev_close) and prev_close > 0 and high > 0 and low > 0):
        return None
    move = max(high / prev_close, prev_close / low) - 1.0
    if move > max_jump:
        return (
            f"price jump: the bar reaches {move:.1%} away from the previous close {prev_close!r} "
            f"(high={high!r}, low={low!r}), over the limit of {max_jump:.1%}"
        )
    return None


def check_ohlcv(
    open,
    high,
    low,
    close,
    volume=None,
    turnover=None,
    *,
    start_ms=None,
    interval: str | None = None,
    now_ms: int | None = None,
    source: str | None = None,
) -> None:
    """Raise :class:`InvalidCandlesError` for the first row of these equal-length arrays that
    :func:`bar_problem` refuses, in its words plus the row's index, time and values. ``source`` (e.g.
    "CSV data.csv") prefixes the message."""
    o, h, lo, c = (np.asarray(a, dtype=np.float64) for a in (open, high, low, close))
    v = None if volume is None else np.asarray(volume, dtype=np.float64)
    q = None if turnover is None else np.asarray(turnover, dtype=np.float64)
    t = None if start_ms is None else np.asarray(start_ms, dtype=np.int64)
    interval = None if interval is None else check_interval(interval)
    with np.errstate(invalid="ignore"):
        # Written so that NaN makes a row bad: every comparison with NaN is False.
        good = (o > 0) & (h > 0) & (lo > 0) & (c > 0) & (h <= MAX_PRICE)
        good &= (h >= np.maximum(o, c)) & (lo <= np.minimum(o, c))
        if v is not None:
            good &= (v >= 0) & (v <= MAX_VOLUME)
        if q is not None:
            good &= np.isnan(q) | ((q >= 0) & (q <= MAX_VOLUME))
        if t is not None:
            good &= (t >= EARLIEST_MS) & (t <= latest_start_ms(now_ms))
            if interval is not None and len(t):
                good &= _aligned(t, interval)
    bad = np.flatnonzero(~good)
    if not bad.size:
        return
    i = int(bad[0])

    def at(a):
        return None if a is None else a[i].item()

    problem = bar_problem(
        at(o), at(h), at(lo), at(c), at(v), at(q), start_ms=at(t), interval=interval, now_ms=now_ms
    )
    if problem is None:  # cannot happen while the mask and bar_problem agree; say so rather than pass
        problem = "invalid bar: failed the vectorised OHLCV check"
    kind, _, detail = problem.partition(": ")
    when = "" if t is None else f" ({describe_ms(t[i])})"
    shown = " ".join(
        f"{name}={a[i].item()!r}"
        for name, a in zip(("open", "high", "low", "close", "volume"), (o, h, lo, c, v), strict=True)
        if a is not None
    )
    prefix = f"{source}: " if source else ""
    raise InvalidCandlesError(
        f"{prefix}{kind} at index {i}{when}: {detail}; {shown} ({bad.size} bad rows in all)"
    )


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:
        return False


def _is_inf(value) -> bool:
    try:
        return math.isinf(value)
    except TypeError:
        return True


def time_problem(start_ms: int, interval: str | None, latest_ms: int) -> str | None:
    """The start-time half of :func:`bar_problem`, with the latest allowed start given explicitly (the
    WebSocket allows only one interval past the server's now)."""
    if start_ms < EARLIEST_MS or start_ms > latest_ms:
        return (
            f"start out of range: {describe_ms(start_ms)} is not between {describe_ms(EARLIEST_MS)} and "
            f"{describe_ms(latest_ms)}; are the times in epoch ms?"
        )
    if interval is not None and not bool(_aligned(np.array([start_ms]), check_interval(interval))[0]):
        return (
            f"misaligned start: {describe_ms(start_ms)} ({start_ms}) is not on a {interval} interval boundary "
            f"(is the interval right?)"
        )
    return None


def _aligned(start_ms: np.ndarray, interval: str) -> np.ndarray:
    if interval == "M":
        months = start_ms.astype("datetime64[ms]").astype("datetime64[M]").astype("datetime64[ms]")
        return months.astype(np.int64) == start_ms
    # Weekly candles start on a calendar weekday, so only whole days are checked for them.
    step = DAY_MS if interval == "W" else next_start_ms(0, interval)
    return start_ms % step == 0
