"""The fused drop-in ConvNeXt-1D: same constructor, ``state_dict`` and outputs as
:class:`convnext_fast.reference.ConvNeXt1d`, with every block running the two fused ops of
:mod:`convnext_fast.ops` channels-last (one transpose at the stem, none per block)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from . import ops, reference
from .backends import check_backend_name, use_backend
from .variants import variant_config


def drop_path_scale(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor | None:
    """Per-sample factor for the residual branch: 0 (dropped) or 1/keep, or None when drop path is off."""
    if rate == 0.0 or not training:
        return None
    keep = 1.0 - rate
    return x.new_empty(x.shape[0]).bernoulli_(keep) / keep


class ConvNeXt1d(reference.ConvNeXt1d):
    """Fused ConvNeXt-1D. Extra keyword ``backend`` ("auto", "cpu", "triton", "reference") forces the
    kernels; the default picks the fastest one live for the input's device."""

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = check_backend_name(backend)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        reference.check_input(x, self.in_chans)
        with use_backend(self.backend) if self.backend != "auto" else nullcontext():
            return self._features_channels_last(reference.crop_to_stride(x)).transpose(1, 2)

    def _features_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        stem_conv, stem_norm = self.stem
        h = stem_conv(x).transpose(1, 2)  # [B, T/4, C]
        h = F.layer_norm(h, (h.shape[-1],), stem_norm.weight, stem_norm.bias, stem_norm.eps)
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                norm, conv = stage.downsample
                h = F.layer_norm(h, (h.shape[-1],), norm.weight, norm.bias, norm.eps)
                h = conv(h.transpose(1, 2)).transpose(1, 2)
            for block in stage.blocks:
                n = ops.dwconv_layernorm(
                    h, block.conv_dw.weight, block.conv_dw.bias, block.norm.weight, block.norm.bias, block.norm.eps
                )
                h = ops.bottleneck(
                    h,
                    n,
                    block.mlp.fc1.weight,
                    block.mlp.fc1.bias,
                    block.mlp.fc2.weight,
                    block.mlp.fc2.bias,
                    block.gamma,
                    drop_path_scale(h, block.drop_path_rate, self.training),
                )
        return h


def create(variant: str, **kwargs) -> ConvNeXt1d:
    """Build a fused model by variant name, e.g. ``create("atto", in_chans=20)``."""
    return ConvNeXt1d(**variant_config(variant), **kwargs)


def convert(model: reference.ConvNeXt1d, backend: str = "auto") -> ConvNeXt1d:
    """A fused model with the same configuration, weights, device, dtype and train/eval mode."""
    param = next(model.parameters())
    fused = ConvNeXt1d(**model.config, backend=backend).to(device=param.device, dtype=param.dtype)
    fused.load_state_dict(model.state_dict(), strict=True)
    return fused.train(model.training)
