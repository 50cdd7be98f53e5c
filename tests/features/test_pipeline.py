"""The causal feature pipeline: the spec, causality, warm-up, streaming == batch, real data, input errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from convnext_fast.features import (
    DEFAULT_CHANNELS,
    FeatureSpec,
    StreamingFeatures,
    compute_features,
    features_from_candles,
)
from tests.features import assert_series_close, load_btc, random_candles

FIELDS = ("open", "high", "low", "close", "volume")


def _features(c: dict, spec: FeatureSpec | None = None, **kw) -> np.ndarray:
    return compute_features(*(c[k] for k in FIELDS), spec, **kw)


def test_default_spec_has_twenty_named_channels_and_an_exact_warmup(rng):
    spec = FeatureSpec()
    assert spec.n_channels == 20 == len(set(spec.names)) and spec.names == DEFAULT_CHANNELS
    c = random_candles(rng, 1500)
    feats = _features(c)
    assert feats.shape == (20, 1500) and feats.dtype == np.float32
    assert np.isfinite(feats[:, spec.warmup :]).all()
    assert np.isnan(feats[:, spec.warmup - 1]).any()
    for name, row in zip(spec.names, feats, strict=True):
        first_finite = int(np.argmax(np.isfinite(row)))
        assert first_finite == spec.lookback(name), name
        assert np.nanstd(row) > 0, f"{name} is constant"


def test_changing_future_bars_changes_no_earlier_feature(rng):
    c = random_candles(rng, 1200)
    base = _features(c, dtype=np.float64)
    for t in (int(rng.integers(0, 250)), int(rng.integers(250, 1199))):
        future = {k: v.copy() for k, v in c.items()}
        other = random_candles(rng, 1200)
        for k in FIELDS:
            future[k][t + 1 :] = other[k][t + 1 :] * (
                c["close"][t] / other["close"][t] if k != "volume" else 1.0
            )
        changed = _features(future, dtype=np.float64)
        np.testing.assert_array_equal(changed[:, : t + 1], base[:, : t + 1])
        assert not np.array_equal(changed[:, t + 1 :], base[:, t + 1 :], equal_nan=True)


def test_features_are_scale_free(rng):
    """Multiplying prices (e.g. another quote currency) and volume by constants changes no feature."""
    c = random_candles(rng, 800)
    scaled = {k: v * (1000.0 if k != "volume" else 7.0) for k, v in c.items()}
    a, b = _features(c, dtype=np.float64), _features(scaled, dtype=np.float64)
    # atol: in flat windows TA-Lib's absolute zero band (variance < 1e-14) is met at one scale and not the
    # other, moving %B by ~1e-9; nowhere else does the scale show.
    np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-6)


@pytest.mark.slow
def test_streaming_equals_batch_bar_for_bar(rng):
    c = random_candles(rng, 1500)
    spec = FeatureSpec(ema_periods=(5, 30, 120), bb_k=1.5, channels=None)
    batch = _features(c, spec, dtype=np.float64)
    stream = StreamingFeatures(spec, dtype=np.float64)
    rows = [stream.update(*(float(c[k][t]) for k in FIELDS)) for t in range(1500)]
    streamed = np.stack(rows, axis=1)
    for name, s_row, b_row in zip(spec.names, streamed, batch, strict=True):
        assert_series_close(name, s_row, b_row, 1e-12)
    assert stream.n_bars == 1500 and stream.ready
    # extend() (history in one call) and float32 output agree too.
    bulk = StreamingFeatures(spec).extend(*(c[k] for k in FIELDS))
    np.testing.assert_allclose(bulk, batch.astype(np.float32), rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(bulk), np.isnan(batch))


def test_revise_previews_the_open_bar_and_commits_nothing(rng):
    c = random_candles(rng, 400)
    batch = _features(c, dtype=np.float64)
    stream = StreamingFeatures(dtype=np.float64)
    stream.extend(*(c[k][:300] for k in FIELDS))
    for t in range(300, 400):
        bar = [float(c[k][t]) for k in FIELDS]
        for _ in range(2):
            stream.revise(*(x * (1 + 0.003 * rng.standard_normal()) for x in bar))
        np.testing.assert_array_equal(stream.revise(*bar), batch[:, t])
        np.testing.assert_array_equal(stream.update(*bar), batch[:, t])
    assert stream.n_bars == 400


def test_real_btc_candles_are_nan_free_after_warmup(btc_csv):
    c = load_btc(btc_csv)
    spec = FeatureSpec()
    feats = features_from_candles(SimpleNamespace(**c), spec)
    assert feats.shape == (20, c["close"].shape[0])
    assert np.isfinite(feats[:, spec.warmup :]).all()
    # Scale-free channels stay small on real data: no raw prices leak through.
    assert np.abs(feats[:, spec.warmup :]).max() < 50


def test_spec_round_trips_through_json_and_selects_channels():
    spec = FeatureSpec(rsi_period=7, ema_periods=(10, 40), channels=("rsi", "ema_40_rel", "stoch_d"))
    restored = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert restored == spec and restored.names == ("rsi", "ema_40_rel", "stoch_d")
    assert restored.n_channels == 3 and restored.warmup == 39
    default = FeatureSpec.from_dict(FeatureSpec().to_dict())
    assert default == FeatureSpec() and default.names == DEFAULT_CHANNELS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rsi_period": 0}, "rsi_period must be >= 1"),
        ({"macd_fast": 30}, "fast must be < slow"),
        ({"bb_k": 0.0}, "bb_k must be a positive finite number"),
        ({"ema_periods": ()}, "ema_periods must be a non-empty"),
        ({"ema_periods": (9, 9)}, "ema_periods must not repeat"),
        ({"channels": ("rsi", "nope")}, "channels: unknown"),
    ],
)
def test_bad_spec_raises_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FeatureSpec(**kwargs)


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown keys"):
        FeatureSpec.from_dict({"rsi_perod": 14})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("close", np.nan, "close has NaN/Inf at index"),
        ("high", 0.0, "high must be positive"),
        ("volume", -1.0, "volume must be >= 0"),
    ],
)
def test_bad_candles_raise_clear_errors(rng, field, value, message):
    c = random_candles(rng, 100)
    c[field][int(rng.integers(0, 100))] = value
    with pytest.raises(ValueError, match=message):
        _features(c)
    with pytest.raises(ValueError, match="equal lengths"):
        compute_features(c["open"][:-1], c["high"], c["low"], c["close"], c["volume"])


def test_streaming_rejects_a_bad_bar_and_keeps_its_state(rng):
    c = random_candles(rng, 300)
    batch = _features(c, dtype=np.float64)
    stream = StreamingFeatures(dtype=np.float64)
    stream.extend(*(c[k][:250] for k in FIELDS))
    with pytest.raises(ValueError, match="close must be finite and > 0"):
        stream.update(1.0, 1.0, 1.0, float("nan"), 1.0)
    with pytest.raises(ValueError, match="volume must be finite and >= 0"):
        stream.revise(1.0, 1.0, 1.0, 1.0, -2.0)
    with pytest.raises(ValueError, match="a bar is 5 numbers"):
        stream.update("x", 1.0, 1.0, 1.0, 1.0)
    bar = [float(c[k][250]) for k in FIELDS]
    np.testing.assert_array_equal(stream.update(*bar), batch[:, 250])
    assert stream.n_bars == 251


@pytest.mark.parametrize("n_bars", [0, 1, 7, 45])
def test_series_shorter_than_the_warmup(rng, n_bars):
    c = {k: v[:n_bars] for k, v in random_candles(rng, 60).items()}
    batch = _features(c, dtype=np.float64)
    streamed = StreamingFeatures(dtype=np.float64).extend(*(c[k] for k in FIELDS))
    assert batch.shape == streamed.shape == (20, n_bars)
    np.testing.assert_array_equal(streamed, batch)
    assert np.isnan(batch).any(axis=0).all()  # every bar is still inside the warm-up


def test_channels_match_an_independent_talib_and_numpy_reference(rng):
    """Every available channel, rebuilt from TA-Lib and numpy straight from its documented definition."""
    talib = pytest.importorskip("talib")
    pd = pytest.importorskip("pandas")
    c = random_candles(rng, 1500)
    o, h, lo, cl, v = (c[k] for k in FIELDS)
    spec = FeatureSpec(ema_periods=(9, 21, 50, 200), channels=FeatureSpec().available_channels)
    ours = dict(zip(spec.names, _features(c, spec, dtype=np.float64), strict=True))
    typical = talib.TYPPRICE(h, lo, cl)
    vol = pd.Series(v).rolling(24)
    vwap = (pd.Series(typical * v).rolling(24).sum() / vol.sum()).to_numpy()
    vwap = np.where(vol.sum().to_numpy() > 0, vwap, typical)
    vwap[:23] = np.nan
    macd, macd_signal, macd_hist = talib.MACD(cl, 12, 26, 9)
    stoch_k, stoch_d = talib.STOCH(h, lo, cl, 14, 3, 0, 3, 0)
    upper, middle, lower = talib.BBANDS(cl, 20, 2.0, 2.0, 0)
    kc_mid, kc_atr = talib.EMA(typical, 20), talib.ATR(h, lo, cl, 10)
    plus_di, minus_di = talib.PLUS_DI(h, lo, cl, 14), talib.MINUS_DI(h, lo, cl, 14)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = {
            "ret_1": np.r_[np.nan, np.log(cl[1:] / cl[:-1])],
            "open_rel": np.log(o / cl),
            "high_rel": np.log(h / cl),
            "low_rel": np.log(lo / cl),
            "volume_rel": np.log1p(np.nan_to_num(v / talib.SMA(v, 20), nan=np.nan, posinf=0.0)),
            "vwap_rel": np.log(vwap / cl),
            "rsi": talib.RSI(cl, 14) / 100 - 0.5,
            "macd": macd / cl,
            "macd_signal": macd_signal / cl,
            "macd_hist": macd_hist / cl,
            "stoch_k": stoch_k / 100 - 0.5,
            "stoch_d": stoch_d / 100 - 0.5,
            "natr": talib.ATR(h, lo, cl, 14) / cl,
            "bb_percent_b": np.where(upper > lower, (cl - lower) / (upper - lower), 0.5) - 0.5,
            "bb_width": (upper - lower) / middle,
            "keltner_pos": np.where(kc_atr > 0, (cl - kc_mid) / (2.0 * kc_atr), 0.0),
            "adx": talib.ADX(h, lo, cl, 14) / 100,
            "di_diff": (plus_di - minus_di) / 100,
            "plus_di": plus_di / 100,
            "minus_di": minus_di / 100,
            **{f"ema_{n}_rel": np.log(talib.EMA(cl, n) / cl) for n in spec.ema_periods},
        }
    expected["bb_percent_b"][np.isnan(upper)] = np.nan
    expected["keltner_pos"][np.isnan(kc_atr) | np.isnan(kc_mid)] = np.nan
    assert set(expected) == set(spec.names)
    # In near-flat windows E[x²] − E[x]² (TA-Lib's formula, and ours) keeps few digits, and %B divides by the
    # width besides; compare the Bollinger channels where the bands are at least 1% apart.
    narrow = (upper - lower) / middle < 1e-2
    for name in ("bb_percent_b", "bb_width"):
        ours[name][narrow] = expected[name][narrow] = np.nan
    for name in spec.names:
        assert_series_close(name, ours[name], expected[name], 1e-8)
