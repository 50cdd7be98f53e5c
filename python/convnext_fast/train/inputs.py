"""The one place the trainer touches the data, features and dataset modules; everything else in
``convnext_fast.train`` goes through these names."""

from __future__ import annotations

import numpy as np

from ..data.augment import Augment
from ..data.candles import Candles, interval_to_ms
from ..data.dataset import (
    LabelSpec,
    WindowDataset,
    class_weights,
    make_labels,
    regression_targets,
    sliding_windows,
    walk_forward_splits,
)
from ..data.store import load_candles
from ..data.synthetic import synthetic_universe
from ..data.universe import (
    BalancedSampler,
    UniverseSpec,
    UniverseWindowDataset,
    build_universe,
    universe_folds,
    usable_windows,
)
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
