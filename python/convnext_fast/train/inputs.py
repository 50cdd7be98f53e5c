"""The one place the trainer touches the data, features and dataset modules (their contracts live in
``prompts/contracts.md``); everything else in ``convnext_fast.train`` goes through these names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.augment import Augment
from ..data.candles import Candles
from ..data.dataset import (
    LabelSpec,
    WindowDataset,
    class_weights,
    make_labels,
    regression_targets,
    sliding_windows,
    walk_forward_splits,
)
from ..errors import UserError
from ..features.pipeline import FeatureSpec, compute_features

__all__ = [
    "Augment",
    "Candles",
    "FeatureSpec",
    "LabelSpec",
    "WindowDataset",
    "class_weights",
    "feature_matrix",
    "load_candles",
    "make_labels",
    "regression_targets",
    "sliding_windows",
    "walk_forward_splits",
]


def load_candles(
    data: str | Path, symbol: str = "BTCUSDT", interval: str = "60", category: str = "linear"
) -> Candles:
    """Candles from a CSV file or from a :class:`CandleStore` folder (then ``symbol``/``interval`` pick the
    series)."""
    path = Path(data)
    if path.is_file():
        return Candles.from_csv(path)
    if path.is_dir():
        from ..data.store import CandleStore

        return CandleStore(path).load(symbol, interval, category=category)
    raise UserError(f"--data {str(data)!r}: no such CSV file or candle-store folder")


def feature_matrix(candles: Candles, spec: FeatureSpec) -> np.ndarray:
    """``[C_in, N]`` float32 features, NaN during the warm-up."""
    return compute_features(candles.open, candles.high, candles.low, candles.close, candles.volume, spec=spec)
