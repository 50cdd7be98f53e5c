"""Labels and regression targets: checked against plain-Python references, TA-Lib/pandas volatility, and for
causality (a label at t reads no bar after t + horizon)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from convnext_fast.data.candles import Candles
from convnext_fast.data.labels import (
    HOLD,
    LONG,
    SHORT,
    UNKNOWN,
    LabelSpec,
    barrier_widths,
    class_weights,
    make_labels,
    regression_targets,
    rolling_log_return_std,
)
from convnext_fast.data.synthetic import synthetic_ohlcv
from convnext_fast.errors import UserError

ALL_SPECS = [
    LabelSpec(kind="fixed", horizon=6, threshold=0.01),
    LabelSpec(kind="volatility", horizon=8, k=0.7, vol="atr", vol_window=14),
    LabelSpec(kind="volatility", horizon=4, k=0.5, vol="std", vol_window=20),
    LabelSpec(kind="triple_barrier", horizon=10, k=0.8, vol="atr", vol_window=10),
    LabelSpec(kind="triple_barrier", horizon=5, k=0.6, vol="std", vol_window=24),
]


@pytest.fixture
def bars(rng):
    return synthetic_ohlcv(int(rng.integers(1_500, 3_000)), seed=int(rng.integers(2**31)))


def reference_widths(bars, spec):
    if spec.kind == "fixed":
        return np.full(len(bars["close"]), spec.threshold)
    if spec.vol == "atr":
        vol = talib.ATR(bars["high"], bars["low"], bars["close"], spec.vol_window) / bars["close"]
    else:
        log_returns = pd.Series(np.log(bars["close"])).diff()
        vol = log_returns.rolling(spec.vol_window).std(ddof=1).to_numpy()
    return spec.k * np.sqrt(spec.horizon) * vol


def reference_labels(bars, spec):
    close, high, low = bars["close"], bars["high"], bars["low"]
    width, h, n = reference_widths(bars, spec), spec.horizon, len(close)
    labels = np.full(n, UNKNOWN)
    for t in range(n - h):
        if np.isnan(width[t]):
            continue
        if spec.kind != "triple_barrier":
            move = np.log(close[t + h] / close[t])
            labels[t] = LONG if move > width[t] else SHORT if move < -width[t] else HOLD
            continue
        labels[t] = HOLD
        upper, lower = close[t] * np.exp(width[t]), close[t] * np.exp(-width[t])
        for j in range(t + 1, t + h + 1):
            up, down = high[j] >= upper, low[j] <= lower
            if up or down:
                labels[t] = HOLD if up and down else LONG if up else SHORT
                break
    return labels


@pytest.mark.parametrize("spec", ALL_SPECS, ids=lambda s: f"{s.kind}-{s.vol}")
def test_labels_match_reference(bars, spec):
    labels = make_labels(bars["close"], bars["high"], bars["low"], spec)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, reference_labels(bars, spec))
    assert np.all(labels[-spec.horizon :] == UNKNOWN), "the last horizon bars have no future"
    assert np.all(labels[spec.warmup : -spec.horizon] >= 0), (
        "every bar with a future and a volatility is labelled"
    )
    assert set(np.unique(labels[labels >= 0])) == {LONG, SHORT, HOLD}, (
        "a random walk yields all three classes"
    )


def test_volatility_matches_talib_atr_and_pandas_std(bars, rng):
    window = int(rng.integers(5, 30))
    spec = LabelSpec(kind="volatility", k=1.0, horizon=1, vol="atr", vol_window=window)
    atr = talib.ATR(bars["high"], bars["low"], bars["close"], window) / bars["close"]
    ours = barrier_widths(bars["close"], bars["high"], bars["low"], spec)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(atr))
    np.testing.assert_allclose(ours[window:], atr[window:], rtol=1e-12)
    std = pd.Series(np.log(bars["close"])).diff().rolling(window).std().to_numpy()
    np.testing.assert_allclose(rolling_log_return_std(bars["close"], window), std, rtol=1e-9, equal_nan=True)


def test_triple_barrier_both_hit_in_one_bar_is_hold_and_first_touch_wins(bars, rng):
    spec = LabelSpec(kind="triple_barrier", horizon=6, k=1.0, vol="std", vol_window=20)
    close, high, low = (bars[key].copy() for key in ("close", "high", "low"))
    t = int(rng.integers(spec.warmup, len(close) - spec.horizon - 1))
    width = barrier_widths(close, high, low, spec)[t]
    upper, lower = close[t] * np.exp(width) * 1.001, close[t] * np.exp(-width) * 0.999
    # Flat bars after t touch no barrier; the volatility at t only reads closes up to t.
    future = slice(t + 1, t + spec.horizon + 1)
    close[future], high[future], low[future] = close[t], close[t] * (1 + 1e-7), close[t] * (1 - 1e-7)
    assert make_labels(close, high, low, spec)[t] == HOLD, "no touch before the vertical barrier"
    cases = {
        "both in one bar": ({t + 2: (upper, lower)}, HOLD),
        "upper first": ({t + 2: (upper, low[t + 2]), t + 3: (high[t + 3], lower)}, LONG),
        "lower first": ({t + 4: (high[t + 4], lower), t + 5: (upper, low[t + 5])}, SHORT),
        "after the vertical barrier": ({t + spec.horizon + 1: (upper, lower)}, HOLD),
    }
    for name, (touches, expected) in cases.items():
        h, lo = high.copy(), low.copy()
        for bar, (bar_high, bar_low) in touches.items():
            h[bar], lo[bar] = bar_high, bar_low
        assert make_labels(close, h, lo, spec)[t] == expected, name


def test_labels_are_causal(bars, rng):
    """Changing bars after t + horizon changes no label at <= t; the volatility at t reads no bar after t."""
    for spec in ALL_SPECS:
        reference = make_labels(bars["close"], bars["high"], bars["low"], spec)
        widths = barrier_widths(bars["close"], bars["high"], bars["low"], spec)
        t = int(rng.integers(spec.warmup + 1, len(reference) - spec.horizon - 2))
        changed = {k: v.copy() for k, v in bars.items()}
        factor = np.exp(rng.normal(0, 0.05, len(reference) - t - spec.horizon - 1))
        for key in ("open", "high", "low", "close"):
            changed[key][t + spec.horizon + 1 :] *= factor
        labels = make_labels(changed["close"], changed["high"], changed["low"], spec)
        np.testing.assert_array_equal(labels[: t + 1], reference[: t + 1])
        assert not np.array_equal(labels, reference), "the change must be visible to later labels"
        later = barrier_widths(changed["close"], changed["high"], changed["low"], spec)
        np.testing.assert_array_equal(later[: t + spec.horizon + 1], widths[: t + spec.horizon + 1])


def test_labels_on_real_prices(btc_csv):
    candles = Candles.from_csv(btc_csv)
    spec = LabelSpec(kind="fixed", horizon=24, threshold=0.01)
    labels = make_labels(candles.close, candles.high, candles.low, spec)
    move = np.log(candles.close[24:] / candles.close[:-24])
    np.testing.assert_array_equal(labels[:-24] == LONG, move > 0.01)
    np.testing.assert_array_equal(labels[:-24] == SHORT, move < -0.01)
    counts = np.bincount(labels[:-24], minlength=3)
    assert counts.min() > 0.2 * len(move), f"real BTC 24h moves beyond 1% are common both ways, got {counts}"


def test_regression_targets(bars, rng):
    horizons = sorted(rng.choice(np.arange(1, 50), size=3, replace=False).tolist())
    close = bars["close"]
    targets = regression_targets(close, horizons)
    assert targets.dtype == np.float32 and targets.shape == (len(close), 3)
    for column, h in enumerate(horizons):
        expected = np.log(close[h:]) - np.log(close[:-h])
        np.testing.assert_allclose(targets[:-h, column], expected, rtol=1e-5, atol=1e-7)
        assert np.all(np.isnan(targets[-h:, column]))
    assert regression_targets(close, 5).shape == (len(close), 1)


def test_label_spec_round_trip_and_errors(rng):
    spec = ALL_SPECS[int(rng.integers(len(ALL_SPECS)))]
    assert LabelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UserError, match="unknown keys"):
        LabelSpec.from_dict({**spec.to_dict(), "horizn": 3})
    with pytest.raises(UserError, match="label spec must be a dict"):
        LabelSpec.from_dict(["fixed", 12])
    for bad, name in [
        ({"kind": "trend"}, "kind"),
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"threshold": -0.1}, "threshold"),
        ({"k": float("nan")}, "k"),
        ({"vol": "garch"}, "vol"),
        ({"vol_window": 1}, "vol_window"),
    ]:
        with pytest.raises(ValueError, match=name):
            LabelSpec(**bad)


def test_price_errors_name_the_argument(bars):
    close = bars["close"].copy()
    with pytest.raises(ValueError, match="high is required"):
        make_labels(close, None, None, LabelSpec(kind="triple_barrier"))
    with pytest.raises(ValueError, match="low has"):
        make_labels(close, bars["high"], bars["low"][:-1], LabelSpec(kind="volatility"))
    close[7] = -1.0
    with pytest.raises(ValueError, match=r"close must be finite and > 0.*bar 7"):
        make_labels(close)
    with pytest.raises(ValueError, match="spec must be a LabelSpec"):
        make_labels(bars["close"], spec={"kind": "fixed"})
    with pytest.raises(ValueError, match=r"horizons\[1\]"):
        regression_targets(bars["close"], [1, 0])


def test_class_weights_count_training_rows_only(rng):
    labels = rng.integers(-1, 3, 5_000)
    train_idx = np.arange(3_000)
    labels[3_000:] = SHORT  # a distribution shift outside training must not move the weights
    weights = class_weights(labels, train_idx)
    known = labels[:3_000][labels[:3_000] >= 0]
    expected = len(known) / (3 * np.bincount(known, minlength=3))
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    np.testing.assert_array_equal(weights, class_weights(labels[:3_000]))
    assert class_weights(np.array([LONG, LONG, HOLD, UNKNOWN]))[SHORT] == 0.0, "absent class weighs nothing"
    with pytest.raises(ValueError, match="no known"):
        class_weights(np.full(4, UNKNOWN))
    with pytest.raises(ValueError, match="labels must be in"):
        class_weights(np.array([0, 3]))
