"""The causal feature pipeline: candles → the model's float32 input matrix ``[C_in, N]``.

Every channel at bar t depends on bars ≤ t only, and is made scale-free with causal quantities — logs of
ratios to the current close, indicator values in fixed units — never with statistics of the whole series
(which would leak the future into the past). The default :class:`FeatureSpec` has exactly these 20 channels:

=================  =======================================================  =====================
channel            value                                                    NaN for the first
=================  =======================================================  =====================
ret_1              log(close / previous close)                              1 bar
open_rel           log(open / close)                                        0
high_rel           log(high / close)                                        0
low_rel            log(low / close)                                         0
volume_rel         log(1 + volume / SMA(volume, 20))                        19
vwap_rel           log(rolling VWAP(24) / close)                            23
rsi                RSI(14) / 100 − 0.5                                      14
macd               MACD line(12, 26, 9) / close                             33
macd_hist          MACD histogram / close                                   33
stoch_k            slow %K(14, 3, 3) / 100 − 0.5                            17
natr               ATR(14) / close                                          14
bb_percent_b       Bollinger(20, 2) %B − 0.5                                19
bb_width           Bollinger bandwidth (upper − lower) / middle             19
keltner_pos        (close − Keltner middle) / (k·ATR), Keltner(20, 10, 2)   19
ema_9_rel ...      log(EMA(n) / close) for n in 9, 21, 50, 200              n − 1
adx                ADX(14) / 100                                            27
di_diff            (+DI − −DI) / 100                                        14
=================  =======================================================  =====================

``macd_signal``, ``stoch_d``, ``plus_di`` and ``minus_di`` are available too (``FeatureSpec(channels=...)``).
The session-reset VWAP needs timestamps, which the pipeline does not take, so it is offered only as an
indicator (:func:`~convnext_fast.features.indicators.vwap_session`).
:attr:`FeatureSpec.warmup` is the number of leading bars with a NaN channel (199 by default, for EMA 200);
after it every channel is finite for valid candles. Values depend on where the series starts only through
the indicators' seeding (EMA/Wilder recursions forget it geometrically), exactly as in TA-Lib;
:meth:`FeatureSpec.history_bars` is how many bars that takes for a given tolerance (1,581 by default for
1e-6), the history a live process must see before its first decision to match a backtest over all data.

:class:`StreamingFeatures` produces the same vectors bar by bar in one compiled call per bar.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..checks import check_finite
from . import streaming as st
from .indicators import (
    NAN,
    adx_kernel,
    as_series_set,
    atr_kernel,
    band_percent_b,
    bollinger_kernel,
    check_macd_periods,
    check_multiplier,
    check_period,
    ema_kernel,
    keltner_kernel,
    log_ratio_kernel,
    macd_kernel,
    rsi_kernel,
    sma_kernel,
    stoch_kernel,
    vwap_rolling_kernel,
)

_JIT = {"cache": True, "nogil": True}

# Row layout of the per-bar indicator values ("iv") that the channel transform reads; EMAs follow at IV_EMA.
(IV_OPEN, IV_HIGH, IV_LOW, IV_CLOSE, IV_VOLUME, IV_RET, IV_VOL_SMA, IV_VWAP, IV_RSI) = range(9)
(IV_MACD, IV_MACD_SIGNAL, IV_MACD_HIST, IV_STOCH_K, IV_STOCH_D, IV_ATR) = range(9, 15)
(IV_BB_MID, IV_BB_UP, IV_BB_LO, IV_KC_MID, IV_KC_UP, IV_KC_LO, IV_ADX, IV_PLUS_DI, IV_MINUS_DI) = range(
    15, 24
)
IV_EMA = 24

# Every channel the pipeline can produce, in the order of _channel_at (EMA channels follow).
BASE_CHANNELS = (
    "ret_1",
    "open_rel",
    "high_rel",
    "low_rel",
    "volume_rel",
    "vwap_rel",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "stoch_k",
    "stoch_d",
    "natr",
    "bb_percent_b",
    "bb_width",
    "keltner_pos",
    "adx",
    "di_diff",
    "plus_di",
    "minus_di",
)

N_BASE_CHANNELS = len(BASE_CHANNELS)


def ema_channel(n: int) -> str:
    return f"ema_{n}_rel"


# Available but not in the default set: each is nearly a function of a default channel.
OPTIONAL_CHANNELS = ("macd_signal", "stoch_d", "plus_di", "minus_di")


def default_channels(ema_periods) -> tuple[str, ...]:
    """The default selection: BASE_CHANNELS without the optional ones, the EMA channels before ``adx``."""
    chosen = [c for c in BASE_CHANNELS if c not in OPTIONAL_CHANNELS]
    cut = chosen.index("adx")
    return (*chosen[:cut], *(ema_channel(n) for n in ema_periods), *chosen[cut:])


DEFAULT_EMA_PERIODS = (9, 21, 50, 200)
DEFAULT_CHANNELS = default_channels(DEFAULT_EMA_PERIODS)


@dataclass(frozen=True)
class FeatureSpec:
    """Indicator parameters and the selected channels; ``to_dict()`` / ``from_dict()`` round-trip it through a
    checkpoint. ``channels=None`` selects the default 20 (EMA channels following ``ema_periods``); after
    construction ``channels`` always holds the resolved names."""

    volume_sma: int = 20
    vwap_window: int = 24
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    stoch_k: int = 14
    stoch_smooth: int = 3
    stoch_d: int = 3
    atr_period: int = 14
    bb_period: int = 20
    bb_k: float = 2.0
    keltner_period: int = 20
    keltner_atr: int = 10
    keltner_k: float = 2.0
    ema_periods: tuple[int, ...] = DEFAULT_EMA_PERIODS
    adx_period: int = 14
    channels: tuple[str, ...] | None = field(default=None)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("bb_k", "keltner_k"):
                check_multiplier(f.name, value)
            elif f.name not in ("ema_periods", "channels"):
                check_period(f.name, value, 2 if f.name in ("macd_slow", "adx_period") else 1)
        check_macd_periods(self.macd_fast, self.macd_slow, self.macd_signal)
        periods = tuple(self.ema_periods) if isinstance(self.ema_periods, (list, tuple)) else None
        if not periods:
            raise ValueError(
                f"ema_periods must be a non-empty sequence of integers, got {self.ema_periods!r}"
            )
        for n in periods:
            check_period("ema_periods", n)
        if len(set(periods)) != len(periods):
            raise ValueError(f"ema_periods must not repeat, got {periods}")
        object.__setattr__(self, "ema_periods", tuple(int(n) for n in periods))
        # Resolved once, so a default spec equals its own to_dict()/from_dict() round trip.
        channels = default_channels(self.ema_periods) if self.channels is None else self.channels
        if not isinstance(channels, (list, tuple)) or not channels:
            raise ValueError(f"channels must be a non-empty sequence of names, got {self.channels!r}")
        unknown = [c for c in channels if c not in self.available_channels]
        if unknown:
            raise ValueError(f"channels: unknown {unknown}; available: {list(self.available_channels)}")
        if len(set(channels)) != len(channels):
            raise ValueError(f"channels must not repeat, got {channels}")
        object.__setattr__(self, "channels", tuple(channels))

    @property
    def available_channels(self) -> tuple[str, ...]:
        return BASE_CHANNELS + tuple(ema_channel(n) for n in self.ema_periods)

    @property
    def names(self) -> tuple[str, ...]:
        return self.channels

    @property
    def n_channels(self) -> int:
        return len(self.names)

    def lookback(self, channel: str) -> int:
        """Leading bars for which ``channel`` is NaN."""
        macd = self.macd_slow + self.macd_signal - 2
        stoch = self.stoch_k + self.stoch_smooth + self.stoch_d - 3
        fixed = {
            "ret_1": 1,
            "open_rel": 0,
            "high_rel": 0,
            "low_rel": 0,
            "volume_rel": self.volume_sma - 1,
            "vwap_rel": self.vwap_window - 1,
            "rsi": self.rsi_period,
            "macd": macd,
            "macd_signal": macd,
            "macd_hist": macd,
            "stoch_k": stoch,
            "stoch_d": stoch,
            "natr": self.atr_period,
            "bb_percent_b": self.bb_period - 1,
            "bb_width": self.bb_period - 1,
            "keltner_pos": max(self.keltner_period - 1, self.keltner_atr),
            "adx": 2 * self.adx_period - 1,
            "di_diff": self.adx_period,
            "plus_di": self.adx_period,
            "minus_di": self.adx_period,
        }
        if channel in fixed:
            return fixed[channel]
        for n in self.ema_periods:
            if channel == ema_channel(n):
                return n - 1
        raise ValueError(f"channel: unknown {channel!r}")

    @property
    def warmup(self) -> int:
        """Bars until every selected channel is finite: ``features[:, warmup:]`` has no NaN."""
        return max(self.lookback(c) for c in self.names)

    def history_bars(self, tol: float = 1e-6) -> int:
        """Bars of history after which every channel is within ``tol`` (relative to the error its
        recursion started with) of its value over a series starting arbitrarily earlier.

        Windowed channels (SMA, Bollinger, rolling VWAP, stochastics) are exact once their window is
        full; the recursive ones (EMA, MACD's EMAs, Wilder's RSI/ATR/ADX smoothing) forget their seed
        geometrically, by a factor (1 − α) per bar, so they need ln(tol) / ln(1 − α) bars after their
        own warm-up. EMA-200 (α = 2/201) at 1e-6: 199 + 1,382 = 1,581 bars."""
        if not 0 < tol < 1:
            raise ValueError(f"tol must be in (0, 1), got {tol}")

        def forget(alpha: float) -> int:
            return math.ceil(math.log(tol) / math.log1p(-alpha))

        ema = lambda n: 2.0 / (n + 1)  # noqa: E731
        wilder = lambda n: 1.0 / n  # noqa: E731
        need = {c: self.lookback(c) for c in self.names}
        macd = max(forget(ema(self.macd_fast)), forget(ema(self.macd_slow))) + forget(ema(self.macd_signal))
        recursive = {
            "rsi": forget(wilder(self.rsi_period)),
            "macd": macd,
            "macd_signal": macd,
            "macd_hist": macd,
            "natr": forget(wilder(self.atr_period)),
            "keltner_pos": max(forget(ema(self.keltner_period)), forget(wilder(self.keltner_atr))),
            "adx": 2 * forget(wilder(self.adx_period)),
            "di_diff": forget(wilder(self.adx_period)),
            "plus_di": forget(wilder(self.adx_period)),
            "minus_di": forget(wilder(self.adx_period)),
            **{ema_channel(n): forget(ema(n)) for n in self.ema_periods},
        }
        return max(need[c] + recursive.get(c, 0) for c in self.names)

    def channel_ids(self) -> np.ndarray:
        """Index of each selected channel in the full channel vector (see ``available_channels``)."""
        return np.array([self.available_channels.index(c) for c in self.names], dtype=np.int64)

    def to_dict(self) -> dict:
        """Plain JSON types only (lists, not tuples), with the resolved channel names."""
        out = dataclasses.asdict(self)
        out["ema_periods"] = list(self.ema_periods)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        if not isinstance(data, dict):
            raise ValueError(f"feature spec must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"feature spec: unknown keys {unknown}; known: {sorted(known)}")
        kwargs = dict(data)
        for key in ("ema_periods", "channels"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


# ------------------------------------------------------------------------------- channel transform
@njit(**_JIT)
def _ratio_or_zero(num, den):
    """num/den, 0 for a zero denominator (a flat market), NaN while either is NaN (warm-up)."""
    if math.isnan(num) or math.isnan(den):
        return NAN
    return num / den if den != 0.0 else 0.0


@njit(cache=True, nogil=True, inline="always")
def _channel_at(cid, iv, t):
    """Channel ``cid`` (order of BASE_CHANNELS, then the EMAs) at bar ``t`` from indicator rows ``iv[k, t]``.
    Batch and streaming both call this, so they differ only by what the indicator values differ by. Inlined
    into the callers' loops, where ``cid`` is loop-invariant and the branch costs nothing."""
    close = iv[IV_CLOSE, t]
    if cid == 0:
        return iv[IV_RET, t]
    if cid <= 3:
        return math.log(iv[IV_OPEN + cid - 1, t] / close)  # open, high, low rows are consecutive
    if cid == 4:
        return math.log1p(_ratio_or_zero(iv[IV_VOLUME, t], iv[IV_VOL_SMA, t]))
    if cid == 5:
        return math.log(iv[IV_VWAP, t] / close)
    if cid == 6:
        return iv[IV_RSI, t] * 0.01 - 0.5
    if cid <= 9:
        return iv[IV_MACD + cid - 7, t] / close  # line, signal, histogram
    if cid <= 11:
        return iv[IV_STOCH_K + cid - 10, t] * 0.01 - 0.5
    if cid == 12:
        return iv[IV_ATR, t] / close
    if cid == 13:
        return band_percent_b(close, iv[IV_BB_UP, t], iv[IV_BB_LO, t]) - 0.5
    if cid == 14:
        return (iv[IV_BB_UP, t] - iv[IV_BB_LO, t]) / iv[IV_BB_MID, t]
    if cid == 15:
        return _ratio_or_zero(close - iv[IV_KC_MID, t], iv[IV_KC_UP, t] - iv[IV_KC_MID, t])
    if cid == 16:
        return iv[IV_ADX, t] * 0.01
    if cid == 17:
        return (iv[IV_PLUS_DI, t] - iv[IV_MINUS_DI, t]) * 0.01
    if cid <= 19:
        return iv[IV_PLUS_DI + cid - 18, t] * 0.01
    return math.log(iv[IV_EMA + cid - N_BASE_CHANNELS, t] / close)


@njit(**_JIT)
def _assemble(iv, channel_ids, out):
    """out[c, t] = channel ``channel_ids[c]`` at bar t: one simple loop per channel."""
    for c in range(channel_ids.shape[0]):
        cid = channel_ids[c]
        row = out[c]
        for t in range(iv.shape[1]):
            row[t] = _channel_at(cid, iv, t)


# ---------------------------------------------------------------------------------------------- batch
def _check_candles(open, high, low, close, volume) -> list[np.ndarray]:
    arrays = as_series_set(open=open, high=high, low=low, close=close, volume=volume)
    for name, arr in zip(("open", "high", "low", "close", "volume"), arrays, strict=True):
        check_finite(name, arr)
        if name == "volume" and (arr < 0).any():
            raise ValueError(f"volume must be >= 0; element {int(np.argmax(arr < 0))} is {arr.min()}")
        if name != "volume" and (arr <= 0).any():
            raise ValueError(f"{name} must be positive; element {int(np.argmax(arr <= 0))} is {arr.min()}")
    return arrays


def compute_features(
    open, high, low, close, volume, spec: FeatureSpec | None = None, *, dtype=np.float32
) -> np.ndarray:
    """Causal feature matrix ``[spec.n_channels, N]`` (``dtype``, float32 by default) from equal-length candle
    arrays, newest bar last; NaN during the first ``spec.warmup`` bars."""
    spec = FeatureSpec() if spec is None else spec
    if not isinstance(spec, FeatureSpec):
        raise ValueError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    o, h, lo, c, v = _check_candles(open, high, low, close, volume)
    s = spec
    iv = np.empty((IV_EMA + len(s.ema_periods), c.shape[0]))
    iv[IV_OPEN], iv[IV_HIGH], iv[IV_LOW], iv[IV_CLOSE], iv[IV_VOLUME] = o, h, lo, c, v
    log_ratio_kernel(c, c, 1, iv[IV_RET])
    sma_kernel(v, s.volume_sma, iv[IV_VOL_SMA])
    vwap_rolling_kernel(h, lo, c, v, s.vwap_window, iv[IV_VWAP])
    rsi_kernel(c, s.rsi_period, iv[IV_RSI])
    macd_kernel(c, s.macd_fast, s.macd_slow, s.macd_signal, *iv[IV_MACD : IV_MACD_HIST + 1])
    stoch_kernel(h, lo, c, s.stoch_k, s.stoch_smooth, s.stoch_d, iv[IV_STOCH_K], iv[IV_STOCH_D])
    atr_kernel(h, lo, c, s.atr_period, iv[IV_ATR])
    bollinger_kernel(c, s.bb_period, s.bb_k, *iv[IV_BB_MID : IV_BB_LO + 1])
    keltner_kernel(h, lo, c, s.keltner_period, s.keltner_atr, s.keltner_k, *iv[IV_KC_MID : IV_KC_LO + 1])
    adx_kernel(h, lo, c, s.adx_period, *iv[IV_ADX : IV_MINUS_DI + 1])
    for j, n in enumerate(s.ema_periods):
        ema_kernel(c, n, iv[IV_EMA + j])
    out = np.empty((s.n_channels, c.shape[0]), dtype=dtype)
    _assemble(iv, s.channel_ids(), out)
    return out


def features_from_candles(candles, spec: FeatureSpec | None = None, *, dtype=np.float32) -> np.ndarray:
    """:func:`compute_features` of a :class:`~convnext_fast.data.candles.Candles` (or any object with
    ``open, high, low, close, volume`` arrays)."""
    return compute_features(
        candles.open, candles.high, candles.low, candles.close, candles.volume, spec, dtype=dtype
    )


def higher_timeframe_features(
    start_ms,
    open,
    high,
    low,
    close,
    volume,
    *,
    interval_ms: int,
    factor: int,
    spec: FeatureSpec | None = None,
) -> np.ndarray:
    """Features of the ``factor`` × ``interval_ms`` bars (e.g. 4h from 1h), aligned to the base bars without
    look-ahead: ``[spec.n_channels, N]`` float32 where bar t holds the features of the newest higher bar that
    is *closed* at t's close (the one t completes, else the one before its own). Higher bars are aligned to
    the epoch (00:00 UTC) and aggregated from the base bars in them (open first, high max, low min, close
    last, volume sum); NaN until the first one closes and through the features' warm-up."""
    spec = FeatureSpec() if spec is None else spec
    start_ms = np.asarray(start_ms, dtype=np.int64)
    o, h, lo, c, v = _check_candles(open, high, low, close, volume)
    if factor < 2 or interval_ms < 1:
        raise ValueError(f"factor must be >= 2 and interval_ms >= 1, got {factor}, {interval_ms}")
    span = int(interval_ms) * int(factor)
    bucket = start_ms // span
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    ends = np.concatenate((starts[1:] - 1, [len(c) - 1]))
    higher = compute_features(
        o[starts],
        np.maximum.reduceat(h, starts),
        np.minimum.reduceat(lo, starts),
        c[ends],
        np.add.reduceat(v, starts),
        spec,
    )
    own = np.cumsum(np.concatenate(([False], bucket[1:] != bucket[:-1])))  # index of each bar's higher bar
    closes_it = start_ms + int(interval_ms) == (bucket + 1) * span
    source = np.where(closes_it, own, own - 1)
    out = np.full((spec.n_channels, len(c)), np.nan, dtype=np.float32)
    have = source >= 0
    out[:, have] = higher[:, source[have]]
    return out


# ------------------------------------------------------------------------------------------ streaming
# Order of the indicator blocks in the streaming state (EMA blocks follow, one per period).
(B_RET, B_VOL_SMA, B_VWAP, B_RSI, B_MACD, B_STOCH, B_ATR, B_BB, B_KC, B_ADX, B_EMA) = range(11)


def _state_blocks(s: FeatureSpec) -> list[np.ndarray]:
    return [
        st.log_return_initial(),
        st.rolling_initial(s.volume_sma),
        st.vwap_rolling_initial(s.vwap_window),
        st.rsi_initial(s.rsi_period),
        st.macd_initial(s.macd_fast, s.macd_slow, s.macd_signal),
        st.stochastic_initial(s.stoch_k, s.stoch_smooth, s.stoch_d),
        st.atr_initial(s.atr_period),
        st.bollinger_initial(s.bb_period, s.bb_k),
        st.keltner_initial(s.keltner_period, s.keltner_atr, s.keltner_k),
        st.adx_initial(s.adx_period),
        *(st.ema_initial(n) for n in s.ema_periods),
    ]


@njit(**_JIT)
def _bad_input(open, high, low, close, volume):
    """0 when the bar is usable, else 1 + the index of the first bad field (open, high, low, close, volume)."""
    prices = (open, high, low, close)
    for k in range(4):
        if not (math.isfinite(prices[k]) and prices[k] > 0.0):
            return k + 1
    if not (math.isfinite(volume) and volume >= 0.0):
        return 5
    return 0


@njit(**_JIT)
def _stream_step(state, lay, open, high, low, close, volume, iv):
    """Advance every indicator block of ``state`` by one bar, writing the indicator values to ``iv[:, 0]``."""
    bad = _bad_input(open, high, low, close, volume)
    if bad:
        return bad
    v = iv[:, 0]
    v[IV_OPEN], v[IV_HIGH], v[IV_LOW], v[IV_CLOSE], v[IV_VOLUME] = open, high, low, close, volume
    v[IV_RET] = st.log_return_step(state, lay[B_RET], close)
    v[IV_VOL_SMA] = st.sma_step(state, lay[B_VOL_SMA], volume)
    v[IV_VWAP] = st.vwap_rolling_step(state, lay[B_VWAP], high, low, close, volume)
    v[IV_RSI] = st.rsi_step(state, lay[B_RSI], close)
    v[IV_MACD], v[IV_MACD_SIGNAL], v[IV_MACD_HIST] = st.macd_step(state, lay[B_MACD], close)
    v[IV_STOCH_K], v[IV_STOCH_D] = st.stochastic_step(state, lay[B_STOCH], high, low, close)
    v[IV_ATR] = st.atr_step(state, lay[B_ATR], high, low, close)
    bb = st.bollinger_step(state, lay[B_BB], close)
    v[IV_BB_MID], v[IV_BB_UP], v[IV_BB_LO] = bb[0], bb[1], bb[2]
    v[IV_KC_MID], v[IV_KC_UP], v[IV_KC_LO] = st.keltner_step(state, lay[B_KC], high, low, close)
    v[IV_ADX], v[IV_PLUS_DI], v[IV_MINUS_DI] = st.adx_step(state, lay[B_ADX], high, low, close)
    for j in range(lay.shape[0] - B_EMA):
        v[IV_EMA + j] = st.ema_step(state, lay[B_EMA + j], close)
    return 0


@njit(**_JIT)
def _stream_bar(state, scratch, commit, lay, bar, iv, channel_ids, out):
    """One bar: committed (``state`` advances) or a revision of the open bar (a copy advances)."""
    target = state
    if not commit:
        scratch[:] = state
        target = scratch
    bad = _stream_step(target, lay, bar[0], bar[1], bar[2], bar[3], bar[4], iv)
    if not bad:
        for c in range(channel_ids.shape[0]):
            out[c] = _channel_at(channel_ids[c], iv, 0)
    return bad


@njit(**_JIT)
def _stream_many(state, lay, open, high, low, close, volume, iv, channel_ids, out):
    """Commit many closed bars in one call; returns (status, index of the bar that failed)."""
    for t in range(close.shape[0]):
        bad = _stream_step(state, lay, open[t], high[t], low[t], close[t], volume[t], iv)
        if bad:
            return bad, t
        for c in range(channel_ids.shape[0]):
            out[c, t] = _channel_at(channel_ids[c], iv, 0)
    return 0, -1


_FIELDS = ("open", "high", "low", "close", "volume")


class StreamingFeatures:
    """The feature vector of each newly closed bar, equal to :func:`compute_features` bar for bar.

    ``update(open, high, low, close, volume)`` consumes a closed bar and returns its ``[n_channels]`` vector
    (NaN during warm-up); ``revise(...)`` returns the vector the still-open bar would have if it closed now,
    without consuming it; ``extend(...)`` consumes arrays of closed bars at once (e.g. history before a
    live stream) and returns ``[n_channels, n]``.
    """

    def __init__(self, spec: FeatureSpec | None = None, *, dtype=np.float32):
        self.spec = FeatureSpec() if spec is None else spec
        if not isinstance(self.spec, FeatureSpec):
            raise ValueError(f"spec must be a FeatureSpec, got {type(self.spec).__name__}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        self.dtype = np.dtype(dtype)
        blocks = _state_blocks(self.spec)
        self._lay = np.cumsum([0] + [b.shape[0] for b in blocks[:-1]]).astype(np.int64)
        self._state = np.concatenate(blocks)
        self._scratch = np.empty_like(self._state)
        self._channel_ids = self.spec.channel_ids()
        self._iv = np.empty((IV_EMA + len(self.spec.ema_periods), 1))
        self._bar = np.empty(5)
        self._out = np.empty(self.spec.n_channels, dtype=self.dtype)
        self.n_bars = 0

    @property
    def ready(self) -> bool:
        """True once every channel of the last update was finite (``n_bars > spec.warmup``)."""
        return self.n_bars > self.spec.warmup

    def _step(self, commit: bool, values) -> np.ndarray:
        bar = self._bar
        try:
            bar[0], bar[1], bar[2], bar[3], bar[4] = values
        except (TypeError, ValueError):
            raise ValueError(f"a bar is 5 numbers (open, high, low, close, volume), got {values!r}") from None
        bad = _stream_bar(
            self._state,
            self._scratch,
            commit,
            self._lay,
            bar,
            self._iv,
            self._channel_ids,
            self._out,
        )
        if bad:
            raise ValueError(_bad_field_message(_FIELDS[bad - 1], bar[bad - 1]))
        return self._out.copy()

    def update(self, open: float, high: float, low: float, close: float, volume: float) -> np.ndarray:
        out = self._step(True, (open, high, low, close, volume))
        self.n_bars += 1
        return out

    def revise(self, open: float, high: float, low: float, close: float, volume: float) -> np.ndarray:
        return self._step(False, (open, high, low, close, volume))

    def get_state(self) -> dict:
        """Everything :meth:`set_state` needs to continue bit for bit (e.g. after a process restart):
        the spec, the bar count and the indicator state as raw float64 bytes."""
        return {"spec": self.spec.to_dict(), "n_bars": self.n_bars, "state": self._state.tobytes()}

    def set_state(self, saved: dict) -> None:
        """Restore a :meth:`get_state` snapshot; refuses one made for another spec."""
        if FeatureSpec.from_dict(saved["spec"]) != self.spec:
            raise ValueError("streaming feature state was saved for another feature spec")
        state = np.frombuffer(saved["state"], dtype=np.float64)
        if state.shape != self._state.shape:
            raise ValueError(f"streaming feature state has {state.size} values, expected {self._state.size}")
        self._state[:] = state
        self.n_bars = int(saved["n_bars"])

    def extend(self, open, high, low, close, volume) -> np.ndarray:
        arrays = as_series_set(open=open, high=high, low=low, close=close, volume=volume)
        out = np.empty((self.spec.n_channels, arrays[0].shape[0]), dtype=self.dtype)
        bad, at = _stream_many(self._state, self._lay, *arrays, self._iv, self._channel_ids, out)
        if bad:
            self.n_bars += at
            field_name = _FIELDS[bad - 1]
            raise ValueError(f"bar {at}: " + _bad_field_message(field_name, arrays[bad - 1][at]))
        self.n_bars += arrays[0].shape[0]
        return out


def _bad_field_message(name: str, value: float) -> str:
    need = ">= 0" if name == "volume" else "> 0"
    return f"{name} must be finite and {need}, got {value}"
