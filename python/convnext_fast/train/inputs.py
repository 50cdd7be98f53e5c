"""The one place the trainer touches the data, features and dataset modules; everything else in
``convnext_fast.train`` goes through these names."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..data.arg_checks import DatasetArgumentError
from ..data.augment import Augment
from ..data.candles import Candles, interval_to_ms
from ..data.dataset import (
    LabelSpec,
    WindowDataset,
    class_weights,
    make_labels,
    regression_targets,
    sliding_windows,
)
from ..data.dataset import walk_forward_splits as _walk_forward_splits
from ..data.store import load_candles
from ..data.synthetic import synthetic_universe
from ..data.universe import (
    BalancedSampler,
    UniverseSpec,
    UniverseWindowDataset,
    build_universe,
    usable_windows,
)
from ..data.universe import universe_folds as _universe_folds
from ..errors import UserError
from ..features.pipeline import FeatureSpec, compute_features

__all__ = [
    "Augment",
    "BalancedSampler",
    "Candles",
    "FeatureSpec",
    "LabelSpec",
    "UniverseSpec",
    "UniverseWindowDataset",
    "WindowDataset",
    "build_universe",
    "class_weights",
    "feature_matrix",
    "interval_to_ms",
    "load_candles",
    "make_labels",
    "regression_targets",
    "sliding_windows",
    "synthetic_universe",
    "universe_folds",
    "usable_windows",
    "walk_forward_splits",
]


def feature_matrix(candles: Candles, spec: FeatureSpec) -> np.ndarray:
    """``[C_in, N]`` float32 features, NaN during the warm-up."""
    return compute_features(candles.open, candles.high, candles.low, candles.close, candles.volume, spec=spec)


def _in_folds_terms(cut: Callable[[int], list], n_folds: int, bars: str, sized: bool) -> list:
    """``cut(n_folds)``, or a UserError in the flags' terms when the folds do not fit the data: the
    splitter's own message names its arguments (``test_size``), which the user never typed.
    ``sized``: the user fixed --test-bars/--val-bars/--train-bars."""
    try:
        return cut(n_folds)
    except DatasetArgumentError:
        fits = next((k for k in range(n_folds - 1, 0, -1) if _fits(cut, k)), 0)
    sizes = " with these --test-bars/--val-bars/--train-bars" if sized else ""
    hint = f"at most --folds {fits}" if fits else "not even one fold: use more data or smaller blocks"
    raise UserError(f"--folds {n_folds} does not fit the data: {bars}{sizes} allow {hint}")


def _fits(cut: Callable[[int], list], n_folds: int) -> bool:
    try:
        cut(n_folds)
    except DatasetArgumentError:
        return False
    return True


def walk_forward_splits(
    n: int, n_folds: int, *, test_size: int | None = None, val_size=None, train_size=None, **kwargs
):
    """:func:`convnext_fast.data.dataset.walk_forward_splits` with the trainer's default test blocks (they
    tile the newest half of the ``n`` bars; a quarter for one fold); too many folds for ``n`` bars is an
    error that names --folds and the most that fit."""

    def cut(k: int) -> list:
        test = test_size or n // (2 * max(k, 2))
        return _walk_forward_splits(n, k, test_size=test, val_size=val_size, train_size=train_size, **kwargs)

    sized = any(v is not None for v in (test_size, val_size, train_size))
    return _in_folds_terms(cut, n_folds, f"{n} usable bars (after the feature warm-up)", sized)


def universe_folds(start_ms, end_idx, *, folds: int, **kwargs):
    """:func:`convnext_fast.data.universe.universe_folds`, with the same --folds wording."""
    sized = any(kwargs.get(k) is not None for k in ("test_bars", "val_bars", "train_bars"))
    return _in_folds_terms(
        lambda k: _universe_folds(start_ms, end_idx, folds=k, **kwargs),
        folds,
        "the universe's usable bars",
        sized,
    )
