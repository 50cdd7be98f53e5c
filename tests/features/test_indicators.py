"""Batch indicators against TA-Lib (≤ 1e-9 relative, same NaN warm-up) and against direct definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convnext_fast.features import indicators as ind
from tests.features import assert_series_close, load_btc, random_candles

talib = pytest.importorskip("talib")

TALIB_REL = 1e-9


def _talib_cases(c, rng):
    """(name, ours, TA-Lib) for every indicator TA-Lib defines, with periods drawn fresh each run."""
    _o, h, lo, cl, v = (c[k] for k in ("open", "high", "low", "close", "volume"))
    n = int(rng.integers(5, 30))
    fast, slow, sig = int(rng.integers(3, 15)), int(rng.integers(16, 40)), int(rng.integers(2, 12))
    kp, ks, dp = int(rng.integers(5, 20)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    k = float(rng.uniform(1.0, 3.0))
    ours_macd, ref_macd = ind.macd(cl, fast, slow, sig), talib.MACD(cl, fast, slow, sig)
    ours_stoch = ind.stochastic(h, lo, cl, kp, ks, dp)
    ref_stoch = talib.STOCH(h, lo, cl, kp, ks, 0, dp, 0)
    ours_bb, ref_bb = ind.bollinger(cl, n, k), talib.BBANDS(cl, n, k, k, 0)
    ours_adx = ind.adx(h, lo, cl, n)
    yield "sma", ind.sma(cl, n), talib.SMA(cl, n)
    yield "volume_sma", ind.volume_sma(v, n), talib.SMA(v, n)
    yield "ema", ind.ema(cl, n), talib.EMA(cl, n)
    yield "ema200", ind.ema(cl, 200), talib.EMA(cl, 200)
    yield "rsi", ind.rsi(cl, n), talib.RSI(cl, n)
    for i, part in enumerate(("macd", "macd_signal", "macd_hist")):
        yield part, ours_macd[i], ref_macd[i]
    yield "stoch_k", ours_stoch[0], ref_stoch[0]
    yield "stoch_d", ours_stoch[1], ref_stoch[1]
    yield "atr", ind.atr(h, lo, cl, n), talib.ATR(h, lo, cl, n)
    yield "bb_middle", ours_bb[0], ref_bb[1]
    yield "bb_upper", ours_bb[1], ref_bb[0]
    yield "bb_lower", ours_bb[2], ref_bb[2]
    yield "adx", ours_adx[0], talib.ADX(h, lo, cl, n)
    yield "plus_di", ours_adx[1], talib.PLUS_DI(h, lo, cl, n)
    yield "minus_di", ours_adx[2], talib.MINUS_DI(h, lo, cl, n)
    typical = talib.TYPPRICE(h, lo, cl)
    kc = ind.keltner(h, lo, cl, n, kp, k)
    kc_atr = talib.ATR(h, lo, cl, kp)
    yield "keltner_middle", kc[0], talib.EMA(typical, n)
    yield "keltner_upper", kc[1], talib.EMA(typical, n) + k * kc_atr
    yield "keltner_lower", kc[2], talib.EMA(typical, n) - k * kc_atr


def test_matches_talib_on_random_walks_with_flat_stretches(rng):
    candles = random_candles(rng, 4000)
    for name, ours, ref in _talib_cases(candles, rng):
        assert_series_close(name, ours, ref, TALIB_REL)


def test_matches_talib_on_real_btc_candles(btc_csv, rng):
    for name, ours, ref in _talib_cases(load_btc(btc_csv), rng):
        assert_series_close(name, ours, ref, TALIB_REL)


def test_series_shorter_than_the_warmup_are_all_nan_like_talib(rng):
    c = random_candles(rng, 12)
    assert np.isnan(ind.ema(c["close"], 20)).all() and np.isnan(talib.EMA(c["close"], 20)).all()
    assert np.isnan(ind.macd(c["close"])[0]).all()
    assert np.isnan(ind.adx(c["high"], c["low"], c["close"], 14)[0]).all()
    assert np.isnan(ind.stochastic(c["high"], c["low"], c["close"])[1]).all()
    assert ind.rsi(c["close"][:0]).shape == (0,)


def test_rolling_sums_do_not_drift_over_long_series(rng):
    """Incremental rolling sums resync exactly every RESYNC_BARS bars; compare the last windows of a long,
    high-priced series with a direct two-pass computation."""
    n, window = 300_000, int(rng.integers(10, 40))
    close = 30_000.0 * np.exp(np.cumsum(0.002 * rng.standard_normal(n)))
    tail = np.lib.stride_tricks.sliding_window_view(close[-5000:], window)
    middle, upper, _ = ind.bollinger(close, window, 2.0)
    np.testing.assert_allclose(ind.sma(close, window)[-tail.shape[0] :], tail.mean(axis=1), rtol=1e-12)
    # The band uses TA-Lib's E[x²] − E[x]², which at a 30k price level with a ~10 std keeps ~9 digits by
    # cancellation alone (not drift: that would grow with the series length).
    np.testing.assert_allclose((upper - middle)[-tail.shape[0] :], 2.0 * tail.std(axis=1), rtol=1e-7)


def test_bollinger_percent_b_and_bandwidth(rng):
    close = random_candles(rng, 500)["close"]
    upper, middle, lower = talib.BBANDS(close, 20, 2.0, 2.0, 0)
    pct_b = ind.bollinger_percent_b(close, upper, lower)
    width = upper - lower
    expected = np.where(width > 0, (close - lower) / np.where(width > 0, width, 1.0), 0.5)
    expected[np.isnan(width)] = np.nan
    assert_series_close("percent_b", pct_b, expected, 1e-12)
    assert_series_close("bandwidth", ind.bollinger_bandwidth(middle, upper, lower), width / middle, 1e-12)


def test_vwap_rolling_and_session_match_pandas(rng):
    c = random_candles(rng, 1000)
    typical = (c["high"] + c["low"] + c["close"]) / 3.0
    n = int(rng.integers(2, 50))
    frame = pd.DataFrame({"pv": typical * c["volume"], "v": c["volume"]})
    rolled = frame.rolling(n).sum()
    expected = np.where(rolled["v"] > 0, rolled["pv"] / rolled["v"].where(rolled["v"] > 0, 1.0), typical)
    expected[: n - 1] = np.nan
    assert_series_close(
        "vwap_rolling", ind.vwap_rolling(c["high"], c["low"], c["close"], c["volume"], n), expected, 1e-9
    )

    start_ms = 1_700_000_000_000 + 3_600_000 * np.arange(1000, dtype=np.int64)
    flags = ind.session_starts(start_ms)
    assert flags[0] and flags.sum() == len(np.unique(start_ms // 86_400_000))
    day = np.cumsum(flags)
    cum = frame.groupby(day).cumsum()
    expected = np.where(cum["v"] > 0, cum["pv"] / cum["v"].where(cum["v"] > 0, 1.0), typical)
    assert_series_close(
        "vwap_session", ind.vwap_session(c["high"], c["low"], c["close"], c["volume"], flags), expected, 1e-12
    )


def test_log_returns_and_normalized_ohlc(rng):
    c = random_candles(rng, 300)
    lag = int(rng.integers(1, 10))
    expected = np.r_[np.full(lag, np.nan), np.log(c["close"][lag:] / c["close"][:-lag])]
    assert_series_close("log_returns", ind.log_returns(c["close"], lag), expected, 1e-15)
    rel_open, rel_high, rel_low, ret = ind.normalized_ohlc(c["open"], c["high"], c["low"], c["close"])
    assert_series_close("open_rel", rel_open, np.log(c["open"] / c["close"]), 1e-15)
    assert_series_close("high_rel", rel_high, np.log(c["high"] / c["close"]), 1e-15)
    assert_series_close("low_rel", rel_low, np.log(c["low"] / c["close"]), 1e-15)
    assert_series_close("ret", ret, ind.log_returns(c["close"]), 0.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: ind.ema(x, 0), "n must be >= 1"),
        (lambda x: ind.ema(x, 2.5), "n must be an integer"),
        (lambda x: ind.sma(x, True), "n must be an integer"),
        (lambda x: ind.ema(x.reshape(2, -1), 3), "x must be 1-D"),
        (lambda x: ind.rsi(["a"] * 4), "close must be a 1-D array of numbers"),
        (lambda x: ind.macd(x, 26, 12), "fast must be < slow"),
        (lambda x: ind.atr(x, x[:-1], x), "equal lengths"),
        (lambda x: ind.bollinger(x, 20, -1.0), "k must be a positive finite number"),
        (lambda x: ind.keltner(x, x, x, atr_period=0), "atr_period must be >= 1"),
        (lambda x: ind.stochastic(x, x, x, d_period=0), "d_period must be >= 1"),
        (lambda x: ind.log_returns(-x), "close must be positive"),
        (lambda x: ind.session_starts(x), "start_ms must be a 1-D integer array"),
        (lambda x: ind.vwap_session(x, x, x, x, np.ones(3, bool)), "new_session must have shape"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message, rng):
    x = 100.0 + rng.random(40)
    with pytest.raises(ValueError, match=message):
        call(x)
