"""The one input normaliser: ``clip((x - mean) / std, ±clip)`` per channel in float32, fitted on the train
bars of a fold, stored in the checkpoint and applied the same way to a whole series (training, backtest)
and to one bar at a time (the live loop)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..data.arg_checks import check_config_keys
from ..errors import UserError

# Normalised features beyond this many standard deviations are clipped: one flash crash must not
# dominate a whole batch's gradients.
FEATURE_CLIP = 10.0
STD_FLOOR = 1e-8


def _normalise_into(x: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: np.float32, out: np.ndarray):
    # The batch and the one-bar paths both run these three float32 operations in this order: a reciprocal
    # multiply, or another order, would differ in the last bit and could flip a decision sitting on τ.
    np.subtract(x, mean, out=out)
    np.divide(out, std, out=out)
    return np.clip(out, -clip, clip, out=out)


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``mean``/``std`` (float lists as stored) and the ``clip`` bound. ``rolling_bars`` is set
    for a universe, whose inputs are z-scored per symbol while they are built (mean 0 / std 1 here)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip: float = FEATURE_CLIP
    rolling_bars: int | None = None

    def __post_init__(self):
        mean, std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(mean) != len(std):
            raise UserError(f"normalisation: mean has {len(mean)} entries but std has {len(std)}")
        if not all(np.isfinite(v) for v in mean):
            raise UserError("normalisation: 'mean' must be finite numbers")
        if not all(np.isfinite(v) and v > 0 for v in std):
            raise UserError("normalisation: 'std' must be finite numbers > 0")
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise UserError(f"normalisation: 'clip' must be a finite number > 0, got {self.clip!r}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "clip", float(self.clip))

    @classmethod
    def fit(cls, features: np.ndarray, end_idx: np.ndarray, window: int) -> Normalisation:
        """Mean/std over the bars the train windows ending at ``end_idx`` cover (never val/test bars)."""
        lo, hi = int(end_idx[0]) - window + 1, int(end_idx[-1]) + 1
        span = features[:, lo:hi].astype(np.float64)
        mean = np.nanmean(span, axis=1)
        std = np.nanstd(span, axis=1)
        std = np.where(std > STD_FLOOR, std, 1.0)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    @classmethod
    def from_dict(cls, data: Mapping) -> Normalisation:
        """The stored form (``{"mean", "std", "clip"?, "rolling_bars"?}``); older files have no ``clip``."""
        if isinstance(data, Normalisation):
            return data
        if not isinstance(data, Mapping):
            raise UserError(
                f"normalisation must be a mapping with 'mean' and 'std', got {type(data).__name__}"
            )
        check_config_keys("normalisation", dict(data), {"mean", "std", "clip", "rolling_bars"})
        for key in ("mean", "std"):
            if not isinstance(data.get(key), (list, tuple)):
                raise UserError(f"normalisation {key!r} must be a list of numbers, got {data.get(key)!r}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data[key]):
                raise UserError(f"normalisation {key!r} must hold only numbers")
        clip = data.get("clip", FEATURE_CLIP)
        rolling = data.get("rolling_bars")
        if isinstance(clip, bool) or not isinstance(clip, (int, float)):
            raise UserError(f"normalisation 'clip' must be a number, got {clip!r}")
        if rolling is not None and (isinstance(rolling, bool) or not isinstance(rolling, int) or rolling < 1):
            raise UserError(f"normalisation 'rolling_bars' must be a positive integer, got {rolling!r}")
        return cls(tuple(data["mean"]), tuple(data["std"]), float(clip), rolling)

    def to_dict(self) -> dict:
        out = {"mean": list(self.mean), "std": list(self.std), "clip": self.clip}
        if self.rolling_bars is not None:
            out["rolling_bars"] = self.rolling_bars
        return out

    @property
    def n_channels(self) -> int:
        return len(self.mean)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.float32]:
        return (
            np.asarray(self.mean, dtype=np.float32),
            np.asarray(self.std, dtype=np.float32),
            np.float32(self.clip),
        )

    def apply(self, features: np.ndarray) -> np.ndarray:
        """``features [C, N]`` → normalised float32 ``[C, N]``; NaN warm-up bars stay NaN (never windowed)."""
        mean, std, clip = self._arrays()
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[0] != self.n_channels:
            raise UserError(
                f"normalisation expects features [{self.n_channels}, N], got shape {features.shape}"
            )
        out = np.empty(features.shape, dtype=np.result_type(features, np.float32))
        return _normalise_into(features, mean[:, None], std[:, None], clip, out).astype(
            np.float32, copy=False
        )

    def per_bar(self) -> Callable[[np.ndarray], np.ndarray]:
        """The one-bar form of :meth:`apply` for the live loop: ``vec [C]`` float32 → a reused ``[C]``
        buffer (overwritten by the next call), the same arithmetic without a per-bar allocation."""
        mean, std, clip = self._arrays()
        out = np.empty_like(mean)

        def normalise(vec: np.ndarray) -> np.ndarray:
            return _normalise_into(vec, mean, std, clip, out)

        return normalise
