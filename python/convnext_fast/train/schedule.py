"""Learning-rate schedule: linear warmup, then cosine decay to a floor, evaluated per optimiser step.

A pure function of the step (no scheduler object) so resuming only needs the step count."""

from __future__ import annotations

import math


def warmup_cosine_lr(
    step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0
) -> float:
    """The learning rate for optimiser step ``step`` (0-based) of ``total_steps``.

    Warmup rises linearly from ``base_lr / warmup_steps`` to ``base_lr`` over the first ``warmup_steps``
    steps; the rest follows half a cosine from ``base_lr`` down to ``min_lr`` at the last step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if base_lr <= 0 or not 0 <= min_lr <= base_lr:
        raise ValueError(
            f"need base_lr > 0 and 0 <= min_lr <= base_lr, got base_lr={base_lr}, min_lr={min_lr}"
        )
    step = min(max(step, 0), total_steps - 1)
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = (step - warmup_steps) / max(decay_steps - 1, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_steps_for(warmup_epochs: float, epochs: int, steps_per_epoch: int) -> int:
    """Warmup length in steps. Short runs (the fast CPU path with a handful of epochs) would otherwise
    spend every step warming up, so warmup is capped at half the run."""
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    total = epochs * steps_per_epoch
    return min(round(warmup_epochs * steps_per_epoch), total // 2)
