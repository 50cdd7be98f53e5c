"""Naive dwconv + LayerNorm in plain PyTorch, channels-last: the oracle for the fused kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dwconv_layernorm(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``x``: ``[B, T, C]``; ``conv_weight``: ``[C, 1, K]`` (odd K, 'same' padding) → ``[B, T, C]``."""
    c, k = x.shape[-1], conv_weight.shape[-1]
    y = F.conv1d(x.transpose(1, 2), conv_weight, conv_bias, padding=k // 2, groups=c).transpose(1, 2)
    return F.layer_norm(y, (c,), norm_weight, norm_bias, eps)
