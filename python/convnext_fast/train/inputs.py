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


def _in_folds_terms(cut: Callable, n_folds: int, bars: str, **kwargs):
    """``cut(n_folds, **kwargs)``, or a UserError in the flags' terms when the folds do not fit the data:
    the splitter's own message names its arguments (``test_size``), which the user never typed."""
    try:
        return cut(n_folds, **kwargs)
    except DatasetArgumentError as exc:
        fits = next((k for k in range(n_folds - 1, 0, -1) if _fits(cut, k, kwargs)), 0)
        sizes = (
            " with these --test-bars/--val-bars/--train-bars"
            if any(
                kwargs.get(k)
                for k in ("test_size", "val_size", "train_size", "test_bars", "val_bars", "train_bars")
            )
            else ""
        )
        hint = f"at most --folds {fits}" if fits else "not even one fold (use more data or smaller blocks)"
        raise UserError(
            f"--folds {n_folds} does not fit the data: {bars}{sizes} allow {hint} ({exc})"
        ) from None


def _fits(cut: Callable, n_folds: int, kwargs: dict) -> bool:
    try:
        cut(n_folds, **kwargs)
    except DatasetArgumentError:
        return False
    return True


def walk_forward_splits(n: int, n_folds: int, **kwargs):
    """:func:`convnext_fast.data.dataset.walk_forward_splits`; too many folds for ``n`` bars is an error
    that names --folds and the most that fit."""
    return _in_folds_terms(
        lambda k, **kw: _walk_forward_splits(n, k, **kw), n_folds, f"{n} usable bars", **kwargs
    )


def universe_folds(start_ms, end_idx, *, folds: int, **kwargs):
    """:func:`convnext_fast.data.universe.universe_folds`, with the same --folds wording."""
    return _in_folds_terms(
        lambda k, **kw: _universe_folds(start_ms, end_idx, folds=k, **kw),
        folds,
        "the universe's usable bars",
        **kwargs,
    )
