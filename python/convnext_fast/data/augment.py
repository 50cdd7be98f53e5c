"""Training-only augmentations of a batch of windows ``[B, C, T]`` (newest bar last), seeded and
shape-preserving. Each sample independently gets each transform with its probability, in this order:

- **window slicing**: keep only the newest ``L`` bars (``L >= (1 - slice_strength) · T``) and pad the older
  part with the oldest kept bar, as if less history were known. The newest bars, which the label is about,
  are never cut.
- **time warping**: resample the window along a smooth random time map (speeds ``exp(N(0, warp_strength))``
  at ``warp_knots`` knots, linearly interpolated) that keeps the oldest and newest bars in place.
- **magnitude scaling**: multiply each channel by ``exp(N(0, scale_strength))`` (always positive, so signs of
  the features survive).
- **jitter**: add Gaussian noise of ``jitter_strength`` times each channel's std over the window, so channels
  of very different scales are perturbed alike.

Validation/test data must never be augmented: :class:`convnext_fast.data.dataset.WindowLoader` accepts an
``Augment`` only for training loaders.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

from .arg_checks import DatasetArgumentError, check_config_keys, check_float, check_int

_PROBABILITIES = ("p_slice", "p_warp", "p_scale", "p_jitter")
_STRENGTHS = ("slice_strength", "warp_strength", "scale_strength", "jitter_strength")


@dataclass
class Augment:
    """Callable ``augment(x [B, C, T]) -> [B, C, T]``; ``x`` itself is never modified."""

    p_slice: float = 0.5
    slice_strength: float = 0.25
    p_warp: float = 0.5
    warp_strength: float = 0.2
    warp_knots: int = 4
    p_scale: float = 0.5
    scale_strength: float = 0.1
    p_jitter: float = 0.5
    jitter_strength: float = 0.03
    seed: int | None = None
    _generator: torch.Generator = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in _PROBABILITIES:
            check_float(name, getattr(self, name), low=0.0, high=1.0)
        check_float("slice_strength", self.slice_strength, low=0.0, high=1.0, include_high=False)
        for name in _STRENGTHS[1:]:
            check_float(name, getattr(self, name), low=0.0, high=5.0)
        check_int("warp_knots", self.warp_knots, minimum=1)
        seed = (
            int(torch.randint(2**62, (1,)).item())
            if self.seed is None
            else check_int("seed", self.seed, minimum=0)
        )
        self._generator = torch.Generator().manual_seed(seed)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict) -> Augment:
        return cls(**check_config_keys("augment config", data, {f.name for f in fields(cls) if f.init}))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or not x.is_floating_point():
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise DatasetArgumentError(f"x must be a floating-point [B, C, T] tensor, got {shape}")
        out = x
        transforms = (
            (self.p_slice, self._slice),
            (self.p_warp, self._warp),
            (self.p_scale, self._scale),
            (self.p_jitter, self._jitter),
        )
        for p, transform in transforms:
            # The choice is drawn even when p is 0 or 1, so one seed gives one stream of decisions.
            chosen = torch.nonzero(torch.rand(x.shape[0], generator=self._generator) < p).flatten()
            if len(chosen) == len(out):
                out = transform(out)
            elif len(chosen):
                # Only the chosen rows are transformed: the untouched ones stay bit-identical and cost nothing.
                rows = chosen.to(x.device)
                out = out.index_copy(0, rows, transform(out.index_select(0, rows)))
        return out

    def _uniform(self, *shape, like: torch.Tensor) -> torch.Tensor:
        return torch.rand(*shape, generator=self._generator).to(device=like.device, dtype=like.dtype)

    def _normal(self, *shape, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(*shape, generator=self._generator).to(device=like.device, dtype=like.dtype)

    def _slice(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        cut = (self._uniform(batch, like=x) * (self.slice_strength * length)).long()
        # Bar t reads bar max(t, cut): everything older than the cut repeats the oldest kept bar.
        positions = torch.arange(length, device=x.device).expand(batch, length).maximum(cut[:, None])
        return x.gather(2, positions[:, None, :].expand_as(x))

    def _warp(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        speeds = torch.exp(self.warp_strength * self._normal(batch, 1, self.warp_knots + 1, like=x))
        if length < 3:
            return x
        speeds = F.interpolate(speeds, size=length - 1, mode="linear", align_corners=True)[:, 0]
        steps = torch.cumsum(speeds, dim=1)
        # Positions run from 0 to T-1 exactly, so the oldest and newest bars stay put.
        positions = torch.cat([torch.zeros_like(steps[:, :1]), steps / steps[:, -1:] * (length - 1)], dim=1)
        left = positions.floor().long().clamp(0, length - 2)
        frac = (positions - left)[:, None, :]
        # Index tensors stay [B, 1, T] and are broadcast (stride 0) over the channels.
        left, right = left[:, None, :], left[:, None, :] + 1
        return torch.lerp(x.gather(2, left.expand_as(x)), x.gather(2, right.expand_as(x)), frac)

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.exp(self.scale_strength * self._normal(x.shape[0], x.shape[1], 1, like=x))

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        # Two-pass std: ~10x cheaper on CPU than Tensor.std over the last dim, and as stable.
        centred = x - x.mean(dim=2, keepdim=True)
        std = centred.square().mean(dim=2, keepdim=True).sqrt()
        return torch.addcmul(x, self._normal(*x.shape, like=x), self.jitter_strength * std)
