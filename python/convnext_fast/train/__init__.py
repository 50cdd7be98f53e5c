"""Training: walk-forward trainer, losses, schedule, checkpoints and evaluation against naive baselines.

``train(TrainConfig(...))`` runs it; ``save_checkpoint`` / ``load_checkpoint`` read and write the one-file
checkpoints the live loop deploys. ``python -m convnext_fast.train`` (or ``torchrun ... -m
convnext_fast.train``) is the command line."""

from __future__ import annotations

from .checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    validate_meta,
)
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "CheckpointMeta",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "restore_training_state",
    "save_checkpoint",
    "train",
    "validate_meta",
]
