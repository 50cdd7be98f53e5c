"""Shared inputs for the feature tests: random OHLCV candles and the real BTC candles."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def random_candles(rng: np.random.Generator, n: int, level: float = 100.0, vol: float = 0.01) -> dict:
    """A geometric random walk with consistent candles (low ≤ open, close ≤ high), random periods of flat
    prices and zero volume (the edge cases of ratio-based indicators), and log-normal volume."""
    close = level * np.exp(np.cumsum(vol * rng.standard_normal(n)))
    flat_start = int(rng.integers(n // 4, n // 2))
    close[flat_start : flat_start + 30] = close[flat_start]
    open_ = np.r_[close[0], close[:-1]] * np.exp(0.2 * vol * rng.standard_normal(n))
    open_[flat_start + 1 : flat_start + 30] = close[flat_start]
    wick = np.abs(0.5 * vol * rng.standard_normal((2, n)))
    wick[:, flat_start + 1 : flat_start + 30] = 0.0
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = rng.lognormal(3.0, 1.0, n)
    volume[flat_start + 1 : flat_start + 30] = 0.0
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def load_btc(path: Path) -> dict:
    import pandas as pd

    frame = pd.read_csv(path)
    return {
        name: frame[name.capitalize()].to_numpy(np.float64)
        for name in ("open", "high", "low", "close", "volume")
    }


def assert_series_close(name: str, ours: np.ndarray, ref: np.ndarray, rel: float) -> None:
    """Same NaN positions, and |ours − ref| ≤ rel·max(|ref|, 1e-3·‖ref‖∞) elementwise: relative per element,
    except that values crossing zero (MACD, DI difference) are judged against a thousandth of their scale."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{name}: shape {ours.shape} != {ref.shape}"
    nan_ours, nan_ref = np.isnan(ours), np.isnan(ref)
    assert np.array_equal(nan_ours, nan_ref), (
        f"{name}: NaN positions differ (first finite: ours {np.argmax(~nan_ours)}, ref {np.argmax(~nan_ref)})"
    )
    finite = ~nan_ref
    assert finite.any(), f"{name}: no finite values to compare"
    scale = np.abs(ref[finite]).max()
    err = np.abs(ours[finite] - ref[finite]) / np.maximum(np.abs(ref[finite]), 1e-3 * scale)
    worst = int(np.argmax(err))
    assert err[worst] <= rel, f"{name}: relative error {err[worst]:.3e} > {rel:.0e} at finite index {worst}"
