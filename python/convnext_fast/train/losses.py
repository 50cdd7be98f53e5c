"""Training criteria for the two heads."""

from __future__ import annotations

import torch
from torch import nn

from .choices import REGRESSION_LOSSES  # defined torch-free for the command line


def classification_loss(class_weights: torch.Tensor | None = None, label_smoothing: float = 0.1) -> nn.Module:
    """Cross-entropy over ``[Long, Short, Hold]`` logits, weighted by class (from the train split, so
    rare directional bars are not drowned by Hold) and label-smoothed (labels from noisy returns are soft)."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if class_weights is not None:
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if class_weights.ndim != 1 or not torch.isfinite(class_weights).all() or (class_weights < 0).any():
            raise ValueError(f"class_weights must be a 1-D finite non-negative vector, got {class_weights}")
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)


def regression_loss(kind: str = "huber", huber_delta: float = 1.0) -> nn.Module:
    """MSE or Huber on (normalised) forward returns; Huber keeps fat-tailed crypto returns from dominating."""
    if kind == "mse":
        return nn.MSELoss()
    if kind == "huber":
        if huber_delta <= 0:
            raise ValueError(f"huber_delta must be > 0, got {huber_delta}")
        return nn.HuberLoss(delta=huber_delta)
    raise ValueError(f"regression loss must be one of {REGRESSION_LOSSES}, got {kind!r}")
