"""Training: walk-forward trainer, losses, schedule, checkpoints and evaluation against naive baselines.

``train(TrainConfig(...))`` runs it; ``save_checkpoint`` / ``load_checkpoint`` read and write the one-file
checkpoints the live loop deploys. ``python -m convnext_fast.train`` (or ``torchrun ... -m
convnext_fast.train``) is the command line."""

from __future__ import annotations

from .._lazy import lazy_exports

# Loaded on first use: `convnext-fast train --help` imports this package and must not wait for torch.
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "CheckpointMeta": "checkpoint",
        "load_checkpoint": "checkpoint",
        "restore_training_state": "checkpoint",
        "save_checkpoint": "checkpoint",
        "validate_meta": "checkpoint",
        "TrainConfig": "trainer",
        "TrainResult": "trainer",
        "train": "trainer",
    },
)

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
