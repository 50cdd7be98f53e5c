"""Causal features for the model: numba batch indicators (:mod:`.indicators`), their O(1)-per-bar streaming
twins (:mod:`.streaming`) and the feature pipeline (:mod:`.pipeline`). Nothing is compiled at import time."""

from __future__ import annotations

from .pipeline import (
    DEFAULT_CHANNELS,
    FeatureSpec,
    StreamingFeatures,
    compute_features,
    features_from_candles,
)

__all__ = [
    "DEFAULT_CHANNELS",
    "FeatureSpec",
    "StreamingFeatures",
    "compute_features",
    "features_from_candles",
]
