"""Random markets and signals for the trading tests: bars with gaps, persistent signals, sizes, funding."""

from __future__ import annotations

import numpy as np


def random_bars(rng: np.random.Generator, n: int, *, vol: float = 0.01, gap_prob: float = 0.1):
    """OHLC with low ≤ open, close ≤ high; some opens gap away from the previous close (stop gaps)."""
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    gaps = np.where(rng.random(n) < gap_prob, rng.normal(0.0, 3 * vol, n), 0.0)
    open_ = np.concatenate(([close[0]], close[:-1])) * np.exp(gaps)
    high = np.maximum(open_, close) * (1.0 + rng.exponential(vol, n))
    low = np.minimum(open_, close) * (1.0 - np.minimum(rng.exponential(vol, n), 0.5))
    return open_, high, low, close


def random_signals(rng: np.random.Generator, n: int, *, change_prob: float = 0.15) -> np.ndarray:
    """Signals in {-1, 0, 1} that persist for a few bars, like a model's."""
    changes = rng.random(n) < change_prob
    values = rng.integers(-1, 2, n)
    idx = np.maximum.accumulate(np.where(changes, np.arange(n), 0))
    return values[idx].astype(np.int8)


def random_funding(rng: np.random.Generator, n: int) -> np.ndarray:
    """A funding event every 8 bars with a random rate (positive and negative)."""
    funding = np.zeros(n)
    funding[7::8] = rng.normal(1e-4, 3e-4, len(funding[7::8]))
    return funding
