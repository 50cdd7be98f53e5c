"""Pure-PyTorch ConvNeXt-1D: the oracle every fused path is checked against.

Kept small and obviously right; speed lives in :mod:`convnext_fast.model`. Layout follows timm's
``convnext.py`` (``stem``, ``stages[i].downsample``, ``stages[i].blocks[j].{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``,
``head.{norm,fc}``) so that the fused model shares every ``state_dict`` key.

Input is ``[B, C_in, T]`` with the newest bar last. The network's total stride is 32; when T is not a
multiple of 32 the *oldest* ``T % 32`` bars are cropped (never the newest), and ``T < 32`` is an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .variants import variant_config

LN_EPS = 1e-6
TOTAL_STRIDE = 32  # stem stride 4, then three stride-2 downsamples
STEM_STRIDE = 4
TASKS = ("classification", "regression")
CLASS_NAMES = ("Long", "Short", "Hold")


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch, rescaling the kept ones by 1/keep."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class LayerNormChannels(nn.LayerNorm):
    """LayerNorm over the channel axis of a ``[B, C, T]`` tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """dwconv(k=7) → LayerNorm → Linear(C,4C) → GELU → Linear(4C,C) → ×gamma → drop path → + input."""

    def __init__(
        self, dim: int, drop_path_rate: float = 0.0, layer_scale_init: float = 1e-6, mlp_ratio: int = 4
    ):
        super().__init__()
        self.conv_dw = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_ratio * dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init)))
        self.drop_path_rate = float(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, T]
        h = self.conv_dw(x).transpose(1, 2)  # [B, T, C]
        h = self.mlp(self.norm(h)) * self.gamma
        return x + drop_path(h.transpose(1, 2), self.drop_path_rate, self.training)


class Stage(nn.Module):
    def __init__(self, in_dim: int, dim: int, depth: int, dp_rates: Sequence[float], layer_scale_init: float):
        super().__init__()
        if in_dim != dim:
            self.downsample = nn.Sequential(
                LayerNormChannels(in_dim, eps=LN_EPS), nn.Conv1d(in_dim, dim, kernel_size=2, stride=2)
            )
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[Block(dim, dp_rates[i], layer_scale_init) for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Head(nn.Module):
    """Global average pool over time → LayerNorm → Linear."""

    def __init__(self, dim: int, num_outputs: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.fc = nn.Linear(dim, num_outputs)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # x: [B, C, T']
        x = self.norm(x.mean(dim=2))
        return x if pre_logits else self.fc(x)


def crop_to_stride(x: torch.Tensor) -> torch.Tensor:
    """Drop the oldest ``T % 32`` bars so the newest bar always reaches the output."""
    t = x.shape[-1]
    if t < TOTAL_STRIDE:
        raise ValueError(
            f"x has T={t} time steps; the model needs at least {TOTAL_STRIDE} (its total stride)"
        )
    return x[..., t % TOTAL_STRIDE :]


def check_input(x: object, in_chans: int) -> None:
    """Raise a clear error for anything that is not a float ``[B, in_chans, T>=32]`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape [B, {in_chans}, T], got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(
            f"x must have shape [B, C_in={in_chans}, T]; got rank {x.ndim} shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"x has {x.shape[1]} channels (dim 1) but the model was built with in_chans={in_chans}"
        )
    if x.shape[0] == 0:
        raise ValueError("x has batch size 0")


class ConvNeXt1d(nn.Module):
    """1D ConvNeXt over ``[B, C_in, T]`` market windows.

    ``task="classification"`` outputs ``num_classes`` logits (default 3: ``[Long, Short, Hold]``);
    ``task="regression"`` outputs ``num_outputs`` values (e.g. forward returns at several horizons).
    """

    def __init__(
        self,
        in_chans: int = 20,
        num_classes: int = 3,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (3, 3, 9, 3),
        drop_path_rate: float = 0.1,
        layer_scale_init: float = 1e-6,
        task: str = "classification",
        num_outputs: int = 1,
    ):
        super().__init__()
        dims, depths = tuple(int(d) for d in dims), tuple(int(d) for d in depths)
        if len(dims) != 4 or len(depths) != 4:
            raise ValueError(f"dims and depths need 4 entries each, got dims={dims} depths={depths}")
        if min(dims) < 1 or min(depths) < 0:
            raise ValueError(
                f"dims must be positive and depths non-negative, got dims={dims} depths={depths}"
            )
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got {in_chans}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        out = num_classes if task == "classification" else num_outputs
        if out < 1:
            raise ValueError(f"the head needs at least one output, got {out}")

        self.in_chans, self.dims, self.depths, self.task = in_chans, dims, depths, task
        self.num_classes, self.num_outputs = num_classes, num_outputs
        self.drop_path_rate, self.layer_scale_init = float(drop_path_rate), float(layer_scale_init)
        self.stem = nn.Sequential(
            nn.Conv1d(in_chans, dims[0], kernel_size=STEM_STRIDE, stride=STEM_STRIDE),
            LayerNormChannels(dims[0], eps=LN_EPS),
        )
        # drop-path rates rise linearly over all blocks, from 0 to drop_path_rate
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist() if sum(depths) else []
        stages, prev, k = [], dims[0], 0
        for dim, depth in zip(dims, depths, strict=True):
            stages.append(Stage(prev, dim, depth, rates[k : k + depth], layer_scale_init))
            prev, k = dim, k + depth
        self.stages = nn.Sequential(*stages)
        self.head = Head(dims[-1], out)
        self.apply(init_weights)

    @property
    def config(self) -> dict:
        """Constructor arguments, enough to rebuild this model (stored in checkpoints)."""
        return {
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "dims": list(self.dims),
            "depths": list(self.depths),
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init": self.layer_scale_init,
            "task": self.task,
            "num_outputs": self.num_outputs,
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T]`` → last-stage feature map ``[B, dims[-1], T // 32]`` (after cropping)."""
        check_input(x, self.in_chans)
        return self.stages(self.stem(crop_to_stride(x)))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(feats, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        """Logits / regression outputs ``[B, out]``; with ``return_features`` the pooled, normalised
        pre-head features ``[B, dims[-1]]`` instead."""
        return self.forward_head(self.forward_features(x), pre_logits=return_features)


def init_weights(module: nn.Module) -> None:
    """ConvNeXt initialisation: truncated normal (std .02) weights, zero biases for conv and linear."""
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def create(variant: str, **kwargs) -> ConvNeXt1d:
    """Build a reference model by variant name, e.g. ``create("tiny", in_chans=20)``."""
    return ConvNeXt1d(**variant_config(variant), **kwargs)
