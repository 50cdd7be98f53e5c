"""What trading needs to know about a trained model, as a structural type.

Trading sits below training (the trainer chooses each fold's decision threshold τ with the backtest), so
trading never imports the trainer. :class:`convnext_fast.train.checkpoint.CheckpointMeta` is the one
implementation of this protocol; decision, threshold, verdict and traded-bar code read only these fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class ModelMeta(Protocol):
    task: str  # "classification" | "regression"
    model: Mapping[str, Any]  # the model's constructor config
    target_scale: tuple[float, ...] | None  # regression outputs → returns
    threshold: float | None  # τ chosen on the validation bars, None in older checkpoints
    ranges: Mapping[str, tuple[str, str]]  # train / val / test bar ranges (UTC strings)
    label_spec: Mapping[str, Any] | None

    @property
    def horizons(self) -> tuple[int, ...]: ...

    @property
    def out_of_sample_start(self) -> str | None: ...

    @property
    def fitted_range_ends(self) -> dict[str, str]: ...
