"""Sizing functions on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.trading.sizing import (
    fixed_fraction_size,
    half_kelly_size,
    kelly_fraction,
    realized_volatility,
    volatility_target_size,
)


def test_kelly_fraction_by_hand():
    # p = 0.6, b = 2: f* = 0.6 − 0.4 / 2 = 0.4; a coin flip at even odds has no edge.
    assert kelly_fraction(0.6, 2.0) == pytest.approx(0.4)
    assert kelly_fraction(0.5, 1.0) == 0.0
    assert kelly_fraction(0.3, 1.0) == 0.0  # negative edge → no bet, never a reversed one
    np.testing.assert_allclose(
        kelly_fraction(np.array([0.55, 0.7]), 1.5), [0.55 - 0.45 / 1.5, 0.7 - 0.3 / 1.5]
    )


def test_half_kelly_and_its_caps():
    # Uncapped: ½ · 0.4 = 0.2 of equity.
    assert half_kelly_size(0.6, 2.0, 0.05, max_risk=None) == pytest.approx(0.2)
    # Risk cap: 1 % risk at a 10 % stop allows at most 0.1 of equity.
    assert half_kelly_size(0.6, 2.0, 0.10, max_risk=0.01) == pytest.approx(0.1)
    # Fraction cap: p = 0.9, b = 3: ½ (0.9 − 0.1/3) = 0.4333 → capped at 0.25.
    assert half_kelly_size(0.9, 3.0, 0.01, max_fraction=0.25, max_risk=0.05) == pytest.approx(0.25)
    assert half_kelly_size(0.6, 2.0, 0.05, max_risk=None, kelly_scale=1.0) == pytest.approx(0.4)
    sizes = half_kelly_size(np.array([0.3, 0.6, 0.8]), 2.0, np.array([0.02, 0.02, 0.02]), max_risk=0.005)
    np.testing.assert_allclose(
        sizes, [0.0, 0.2, 0.25]
    )  # 0.3: no edge; 0.8 → ½·0.7 = 0.35, risk cap 0.005/0.02 = 0.25


def test_fixed_fraction_by_hand():
    assert fixed_fraction_size(0.01, 0.02) == pytest.approx(0.5)
    assert fixed_fraction_size(0.02, 0.01) == pytest.approx(1.0)  # 2.0 capped at max_fraction = 1
    assert fixed_fraction_size(0.02, 0.01, max_fraction=3.0) == pytest.approx(2.0)


def test_volatility_target_by_hand():
    sizes = volatility_target_size(np.array([0.2, 0.8, np.nan, 0.05]), 0.4, max_fraction=2.0)
    np.testing.assert_allclose(sizes, [2.0, 0.5, 0.0, 2.0])  # 0.4/0.05 = 8 → capped; unknown vol → 0


def test_realized_volatility_matches_a_direct_window(rng):
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    vol = realized_volatility(close, 24, 8760)
    assert np.isnan(vol[:24]).all() and np.isfinite(vol[24:]).all()
    t = int(rng.integers(24, 200))
    direct = np.std(np.diff(np.log(close[t - 24 : t + 1])), ddof=1) * np.sqrt(8760)
    assert vol[t] == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kelly_fraction(1.2, 2.0), "p_win"),
        (lambda: kelly_fraction(0.6, 0.0), "reward_risk"),
        (lambda: half_kelly_size(0.6, 2.0, 0.0), "stop_distance"),
        (lambda: half_kelly_size(0.6, 2.0, 0.02, max_fraction=-1), "max_fraction"),
        (lambda: fixed_fraction_size(1.5, 0.02), "risk_fraction"),
        (lambda: volatility_target_size(0.2, 0.0), "target_vol"),
        (lambda: realized_volatility([1.0, 2.0, 3.0], 1, 8760), "window"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _probs(rng, n):
    p = rng.dirichlet([1.0, 1.0, 1.0], n)
    return p


def test_sizing_rule_kelly_sizes_the_chosen_side(rng):
    from convnext_fast.trading.sizing import SizingRule

    n = 500
    probs = _probs(rng, n)
    signal = rng.choice([-1, 0, 1], n)
    rule = SizingRule("kelly", size=0.8, stop_loss=0.02, take_profit=0.05, max_risk=0.03)
    got = rule.sizes(signal, probs)
    chosen = np.where(signal > 0, probs[:, 0], probs[:, 1])
    want = np.minimum(np.maximum(chosen - (1 - chosen) / 2.5, 0) * 0.5, min(0.8, 0.03 / 0.02))
    np.testing.assert_allclose(got, np.where(signal != 0, want, 0.0), rtol=1e-12)
    assert (got[signal == 0] == 0).all() and got.max() <= 0.8
    with pytest.raises(ValueError, match="stop-loss and --take-profit"):
        SizingRule("kelly")
    with pytest.raises(ValueError, match="probabilities"):
        rule.sizes(signal)


@pytest.mark.parametrize("method", ["fixed", "kelly", "vol-target"])
def test_streaming_sizer_equals_the_batch_rule(method, rng):
    from convnext_fast.trading.sizing import SizingRule, StreamingSizer

    n = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    probs, signal = _probs(rng, n), rng.choice([-1, 0, 1], n)
    rule = SizingRule(method, size=1.5, stop_loss=0.02, take_profit=0.03, vol_window=24, target_vol=0.3)
    batch = rule.sizes(signal, probs, close)
    sizer = StreamingSizer(rule)
    live = []
    for t in range(n):
        sizer.observe(close[t])
        live.append(sizer.size(int(signal[t]), probs[t]))
    np.testing.assert_allclose(live, batch, rtol=1e-9, atol=1e-15)
    if method == "vol-target":
        assert (np.asarray(live)[:24] == 0).all() and np.asarray(live)[signal != 0][-50:].max() > 0
