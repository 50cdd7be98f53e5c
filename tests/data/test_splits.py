"""Chronological and walk-forward splits: layout, argument checks, and no leak from training into later
segments through either the window or the label horizon."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from convnext_fast.data.candles import Candles
from convnext_fast.data.dataset import WindowDataset
from convnext_fast.data.labels import LabelSpec, make_labels
from convnext_fast.data.splits import Split, chronological_split, required_purge, walk_forward_splits


def assert_no_leak(split: Split, horizon: int, window: int):
    """The last bar any training sample reads (its label's future) precedes the first bar any validation or
    test window reads; and validation precedes test the same way."""
    segments = [s for s in (split.train, split.val, split.test) if len(s)]
    for earlier, later in itertools.pairwise(segments):
        assert earlier.max() + horizon < later.min() - window + 1, split.bounds()


def assert_contiguous(indices: np.ndarray):
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, np.arange(indices[0], indices[0] + len(indices)))


def test_chronological_split_layout(rng):
    n, horizon, window = (
        int(rng.integers(5_000, 50_000)),
        int(rng.integers(1, 48)),
        int(rng.integers(32, 512)),
    )
    val_frac, test_frac = rng.uniform(0.05, 0.25, 2)
    embargo = int(rng.integers(0, 100))
    split = chronological_split(n, val_frac, test_frac, horizon=horizon, window=window, embargo=embargo)
    gap = horizon + window + embargo
    for part in (split.train, split.val, split.test):
        assert_contiguous(part)
    assert split.train[0] == 0 and split.test[-1] == n - 1
    assert split.val[0] - split.train[-1] - 1 == gap and split.test[0] - split.val[-1] - 1 == gap
    assert len(split.val) == round(n * val_frac) and len(split.test) == round(n * test_frac)
    assert len(split.train) + len(split.val) + len(split.test) + 2 * gap == n
    assert_no_leak(split, horizon, window)
    assert split.bounds()["test"] == (int(split.test[0]), n - 1)


def test_explicit_purge_is_checked_against_horizon_and_window(rng):
    horizon, window = int(rng.integers(1, 48)), int(rng.integers(32, 256))
    needed = required_purge(horizon, window)
    split = chronological_split(10_000, 0.1, 0.1, purge=needed + 5, horizon=horizon, window=window)
    assert split.val[0] - split.train[-1] - 1 == needed + 5
    with pytest.raises(ValueError, match=f"purge={needed - 1} is too small.*{needed}"):
        chronological_split(10_000, 0.1, 0.1, purge=needed - 1, horizon=horizon, window=window)
    # The rule keeps one bar to spare: two short, the last training label would reach the first val window.
    short = chronological_split(10_000, 0.1, 0.1, purge=needed - 2)
    assert short.train[-1] + horizon >= short.val[0] - window + 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0, "purge": 0}, "n must be >= 1"),
        ({"n": 100, "val_frac": 0.6, "test_frac": 0.5, "purge": 0}, "val_frac \\+ test_frac"),
        ({"n": 100, "val_frac": -0.1, "purge": 0}, "val_frac must be in"),
        ({"n": 100, "test_frac": 1.0, "purge": 0}, "test_frac must be in"),
        ({"n": 100, "val_frac": 0.001, "purge": 0}, "val_frac=0.001 of n=100 bars is less than one bar"),
        ({"n": 100}, "pass purge"),
        ({"n": 100, "horizon": 5}, "both horizon and window"),
        ({"n": 100, "purge": -1}, "purge must be >= 0"),
        ({"n": 100, "purge": 0, "embargo": 1.5}, "embargo must be an integer"),
        ({"n": 200, "horizon": 12, "window": 64}, "no training bars"),
    ],
)
def test_chronological_split_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        chronological_split(**kwargs)


def test_walk_forward_expanding_folds(rng):
    n, n_folds = int(rng.integers(20_000, 60_000)), int(rng.integers(2, 8))
    horizon, window, embargo = int(rng.integers(1, 48)), int(rng.integers(32, 256)), int(rng.integers(0, 50))
    folds = walk_forward_splits(n, n_folds, horizon=horizon, window=window, embargo=embargo)
    assert len(folds) == n_folds
    tests = np.concatenate([fold.test for fold in folds])
    assert_contiguous(tests)
    assert tests[-1] == n - 1 and len(tests) == n_folds * (n // (2 * n_folds)), "tests tile the last half"
    for k, fold in enumerate(folds):
        assert fold.train[0] == 0 and len(fold.val) == len(fold.test)
        assert_no_leak(fold, horizon, window)
        if k:
            assert len(fold.train) == len(folds[k - 1].train) + len(fold.test), (
                "training expands by one block"
            )


def test_walk_forward_rolling_folds_and_no_validation(rng):
    n, train_size = 30_000, int(rng.integers(1_000, 5_000))
    folds = walk_forward_splits(
        n, 4, test_size=2_000, val_size=0, train_size=train_size, purge=100, embargo=10
    )
    for fold in folds:
        assert len(fold.train) == train_size and len(fold.val) == 0
        assert fold.test[0] - fold.train[-1] - 1 == 110
        assert_no_leak(fold, horizon=10, window=90)


def test_walk_forward_errors():
    with pytest.raises(ValueError, match="n_folds must be >= 1"):
        walk_forward_splits(1_000, 0, purge=0)
    with pytest.raises(ValueError, match="test_size must be >= 1"):
        walk_forward_splits(10, 20, purge=0)
    with pytest.raises(ValueError, match="fold 0 of 3 has no room"):
        walk_forward_splits(1_000, 3, test_size=300, purge=50)
    with pytest.raises(ValueError, match="train_size must be >= 1"):
        walk_forward_splits(1_000, 2, train_size=0, purge=0)
    with pytest.raises(ValueError, match="purge=3 is too small"):
        walk_forward_splits(10_000, 2, purge=3, horizon=4, window=32)


def test_training_never_touches_evaluation_bars_on_real_data(btc_csv, rng):
    """Rewrite every bar a validation/test window can see; no training window or label may change."""
    candles = Candles.from_csv(btc_csv)
    spec = LabelSpec(kind="triple_barrier", horizon=int(rng.integers(4, 48)), k=1.0)
    window = int(rng.choice([32, 64, 128]))
    n = len(candles)
    splits = [chronological_split(n, 0.15, 0.15, horizon=spec.horizon, window=window, embargo=24)]
    splits += walk_forward_splits(n, 3, horizon=spec.horizon, window=window)
    features = np.stack([np.log(candles.close), np.log(candles.volume + 1.0)]).astype(np.float32)
    labels = make_labels(candles.close, candles.high, candles.low, spec)
    for split in splits:
        first_seen = split.val[0] - window + 1
        shock = np.exp(rng.normal(0, 0.05, n - first_seen))
        close, high, low = (getattr(candles, key).copy() for key in ("close", "high", "low"))
        for array in (close, high, low):
            array[first_seen:] *= shock
        changed_features = features.copy()
        changed_features[:, first_seen:] = rng.normal(size=(2, n - first_seen))
        changed_labels = make_labels(close, high, low, spec)
        assert not np.array_equal(changed_labels[split.val], labels[split.val]), (
            "the shock reaches evaluation"
        )
        before = WindowDataset(features, labels, split.train, window=window)
        after = WindowDataset(changed_features, changed_labels, split.train, window=window)
        np.testing.assert_array_equal(after.y, before.y)
        np.testing.assert_array_equal(after[: len(after)][0].numpy(), before[: len(before)][0].numpy())
