"""Sliding windows (zero-copy, newest bar last), WindowDataset row selection and the batch loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convnext_fast.data.dataset import WindowDataset, make_loader, sliding_windows
from convnext_fast.data.labels import UNKNOWN


@pytest.fixture
def features(rng) -> np.ndarray:
    return rng.normal(size=(int(rng.integers(3, 24)), int(rng.integers(500, 2_000)))).astype(np.float32)


def test_sliding_windows_are_views_with_newest_bar_last(features, rng):
    window, stride = int(rng.integers(1, 100)), int(rng.integers(1, 5))
    windows, end_idx = sliding_windows(features, window, stride)
    n = features.shape[1]
    assert windows.shape == (len(range(window - 1, n, stride)), features.shape[0], window)
    assert np.shares_memory(windows, features), "windows must be a view, not a copy"
    assert windows.base is not None and not windows.flags.writeable
    np.testing.assert_array_equal(end_idx, np.arange(window - 1, n, stride))
    for i in rng.integers(0, len(windows), 20):
        np.testing.assert_array_equal(windows[i], features[:, end_idx[i] - window + 1 : end_idx[i] + 1])
        np.testing.assert_array_equal(windows[i, :, -1], features[:, end_idx[i]])


def test_sliding_windows_errors(features):
    for args, message in [
        ((features[0], 8), r"features must be \[C, N\]"),
        ((features, 0), "window must be >= 1"),
        ((features, 4.0), "window must be an integer"),
        ((features, features.shape[1] + 1), "longer than"),
        ((features, 8, 0), "stride must be >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            sliding_windows(*args)


def test_dataset_drops_unusable_rows_and_counts_them(features, rng):
    n, window = features.shape[1], int(rng.integers(8, 64))
    features[rng.integers(0, features.shape[0], 5), rng.integers(0, n, 5)] = np.nan
    labels = rng.integers(0, 3, n)
    labels[rng.integers(0, n, 50)] = UNKNOWN
    end_idx = np.sort(rng.choice(n, size=n // 2, replace=False))
    dataset = WindowDataset(features, labels, end_idx, window=window)

    short = end_idx < window - 1
    nan_window = np.array(
        [
            not s and np.isnan(features[:, e - window + 1 : e + 1]).any()
            for e, s in zip(end_idx, short, strict=True)
        ]
    )
    unlabelled = (labels[end_idx] == UNKNOWN) & ~short & ~nan_window
    assert dataset.dropped == {
        "unlabelled": unlabelled.sum(),
        "nan_features": nan_window.sum(),
        "short_history": short.sum(),
    }
    assert dataset.dropped["nan_features"] > 0 and dataset.dropped["unlabelled"] > 0
    kept = end_idx[~(short | nan_window | unlabelled)]
    np.testing.assert_array_equal(dataset.end_idx, kept)
    assert len(dataset) == len(kept) and "samples kept" in dataset.summary()
    for i in rng.integers(0, len(dataset), 20):
        x, y = dataset[int(i)]
        assert x.dtype == torch.float32 and x.shape == (features.shape[0], window)
        np.testing.assert_array_equal(x.numpy(), features[:, kept[i] - window + 1 : kept[i] + 1])
        assert y.dtype == torch.int64 and y.item() == labels[kept[i]]


def test_batch_indexing_equals_stacked_items_and_windows_form_matches(features, rng):
    window = int(rng.integers(8, 64))
    labels = rng.integers(-1, 3, features.shape[1])
    windows, end_idx = sliding_windows(features, window)
    from_matrix = WindowDataset(features, labels, end_idx, window=window)
    from_windows = WindowDataset(windows, labels, end_idx)
    np.testing.assert_array_equal(from_windows.end_idx, from_matrix.end_idx)
    batch = rng.choice(len(from_matrix), size=33, replace=False)
    x, y = from_matrix[batch]
    assert x.shape == (33, features.shape[0], window) and y.shape == (33,)
    items = [from_windows[int(i)] for i in batch]
    torch.testing.assert_close(x, torch.stack([item[0] for item in items]), rtol=0, atol=0)
    torch.testing.assert_close(y, torch.stack([item[1] for item in items]), rtol=0, atol=0)


def test_regression_targets_with_nan_are_dropped(features, rng):
    n, window = features.shape[1], 16
    targets = rng.normal(size=(n, 3)).astype(np.float32)
    targets[-7:, 2] = np.nan
    dataset = WindowDataset(features, targets, np.arange(n), window=window)
    assert dataset.dropped == {"unlabelled": 7, "nan_features": 0, "short_history": window - 1}
    _, y = dataset[[0, len(dataset) - 1]]
    assert y.dtype == torch.float32 and y.shape == (2, 3)
    np.testing.assert_array_equal(y.numpy(), targets[[window - 1, n - 8]])


def test_dataset_errors(features, rng):
    labels = rng.integers(0, 3, features.shape[1])
    windows, end_idx = sliding_windows(features, 8)
    n = features.shape[1]
    for args, kwargs, message in [
        ((features, labels, np.arange(10)), {}, "window is required"),
        ((features, labels, np.arange(n + 1)), {"window": 8}, r"end_idx must lie in \[0,"),
        ((features, labels[:, None, None], np.arange(10)), {"window": 8}, "targets must be"),
        ((features, labels, np.arange(10.0)), {"window": 8}, "end_idx must be a 1-D integer"),
        ((features[None, None], labels, np.arange(10)), {"window": 8}, "features must be"),
        ((windows, labels, end_idx[:-1]), {}, "end_idx has"),
        ((windows, labels, end_idx), {"window": 9}, "window=9 but"),
        ((features[:, :-1], labels, [n - 1]), {"window": 8}, "end_idx must be <"),
    ]:
        with pytest.raises(ValueError, match=message):
            WindowDataset(*args, **kwargs)


def test_loaders_cover_every_sample_once(features, rng):
    labels = rng.integers(0, 3, features.shape[1])
    dataset = WindowDataset(features, labels, np.arange(features.shape[1]), window=32)
    batch_size = int(rng.integers(7, 100))
    ordered = make_loader(dataset, batch_size, train=False)
    assert len(ordered) == -(-len(dataset) // batch_size)
    y_in_order = torch.cat([y for _, y in ordered]).numpy()
    np.testing.assert_array_equal(y_in_order, dataset.y)
    seed = int(rng.integers(2**31))
    y_shuffled = torch.cat([y for _, y in make_loader(dataset, batch_size, train=True, seed=seed)]).numpy()
    y_again = torch.cat([y for _, y in make_loader(dataset, batch_size, train=True, seed=seed)]).numpy()
    np.testing.assert_array_equal(y_again, y_shuffled, err_msg="one seed, one order")
    assert not np.array_equal(y_shuffled, dataset.y), "training batches are shuffled"
    np.testing.assert_array_equal(np.sort(y_shuffled), np.sort(dataset.y))
    dropped = make_loader(dataset, batch_size, train=True, drop_last=True)
    assert all(len(y) == batch_size for _, y in dropped)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        make_loader(dataset, 0, train=False)
