"""The SYNTHETIC default market: valid OHLCV, reproducible, and with the stylised facts it promises."""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.data.synthetic import SyntheticMarketSpec, synthetic_ohlcv


@pytest.fixture
def seed(rng) -> int:
    return int(rng.integers(2**31))


def test_bars_are_valid_ohlcv(seed):
    bars = synthetic_ohlcv(5_000, seed=seed, interval_ms=60_000, start_ms=1_700_000_000_000)
    assert all(len(v) == 5_000 for v in bars.values())
    assert np.all(np.diff(bars["start_ms"]) == 60_000) and bars["start_ms"][0] == 1_700_000_000_000
    o, h, low, c = bars["open"], bars["high"], bars["low"], bars["close"]
    assert np.all(np.isfinite(np.stack([o, h, low, c, bars["volume"]])))
    assert np.all(low > 0) and np.all(bars["volume"] > 0)
    assert np.all(low <= np.minimum(o, c)) and np.all(h >= np.maximum(o, c))
    assert np.array_equal(o[1:], c[:-1]), "each bar opens at the previous close"
    assert np.mean(h > np.maximum(o, c)) > 0.5, "wicks above the body should be common"


def test_same_seed_same_market_other_seed_other_market(seed):
    a, b, other = (
        synthetic_ohlcv(300, seed=seed),
        synthetic_ohlcv(300, seed=seed),
        synthetic_ohlcv(300, seed=seed + 1),
    )
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.allclose(a["close"], other["close"])


def test_fat_tails_and_volatility_clustering(seed):
    bars = synthetic_ohlcv(40_000, seed=seed)
    r = np.diff(np.log(bars["close"]))
    kurtosis = np.mean((r - r.mean()) ** 4) / r.var() ** 2
    assert kurtosis > 4.0, f"excess kurtosis expected (normal is 3), got {kurtosis:.2f}"
    abs_autocorr = np.corrcoef(np.abs(r[1:]), np.abs(r[:-1]))[0, 1]
    assert abs_autocorr > 0.1, f"|returns| should be autocorrelated (vol clustering), got {abs_autocorr:.3f}"
    # Turbulent bars move more than calm ones, and trade more.
    regime = bars["regime"][1:]
    assert np.abs(r[regime == 2]).mean() > 2 * np.abs(r[regime == 0]).mean()
    assert bars["volume"][1:][regime == 2].mean() > bars["volume"][1:][regime == 0].mean()
    assert bars["close"].max() / bars["close"].min() < 1e3, "the weak mean reversion keeps prices plausible"


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_bars": 0}, "n_bars"),
        ({"n_bars": 2.5}, "n_bars"),
        ({"n_bars": 10, "interval_ms": 0}, "interval_ms"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic_ohlcv(**kwargs)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("start_price", -1.0),
        ("regime_vol", (0.1, 0.2)),
        ("tail_df", 2.0),
        ("substeps", 0),
        ("base_volume", 0.0),
    ],
)
def test_bad_spec_is_named(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticMarketSpec(**{field: value})


def test_universe_is_valid_correlated_and_reproducible(seed):
    from convnext_fast.data.synthetic import synthetic_universe

    uni = synthetic_universe(4, 3_000, seed=seed)
    assert list(uni) == ["SYNTHETIC00", "SYNTHETIC01", "SYNTHETIC02", "SYNTHETIC03"]
    for candles in uni.values():
        candles.validate("60")
        assert np.array_equal(candles.start_ms, uni["SYNTHETIC00"].start_ms)
    returns = np.stack([np.diff(np.log(c.close)) for c in uni.values()])
    corr = np.corrcoef(returns)[np.triu_indices(4, 1)]
    assert np.all((corr > 0.25) & (corr < 0.75)), corr  # loading 0.7: about 0.49
    levels = [c.close[0] for c in uni.values()]
    assert max(levels) / min(levels) > 1.5, "symbols trade at different price levels"
    independent = synthetic_universe(3, 3_000, seed=seed, loading=0.0)
    corr0 = np.corrcoef(np.stack([np.diff(np.log(c.close)) for c in independent.values()]))
    assert np.all(np.abs(corr0[np.triu_indices(3, 1)]) < 0.12)
    again = synthetic_universe(4, 3_000, seed=seed)
    assert all(again[s].equals(uni[s]) for s in uni)
    assert not synthetic_universe(4, 3_000, seed=seed + 1)["SYNTHETIC00"].equals(uni["SYNTHETIC00"])
