"""Naive GELU inverted bottleneck in plain PyTorch, channels-last: the oracle for the fused kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bottleneck(
    x: torch.Tensor,
    n: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    gamma: torch.Tensor,
    sample_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` (residual) and ``n`` (normalised): ``[B, T, C]``; weights as in ``nn.Linear`` → ``[B, T, C]``."""
    branch = F.linear(F.gelu(F.linear(n, fc1_weight, fc1_bias)), fc2_weight, fc2_bias) * gamma
    if sample_scale is not None:
        branch = branch * sample_scale.view(-1, 1, 1).to(branch.dtype)
    return x + branch
