"""Assembles a :class:`~convnext_fast.live.loop.LiveEngine` from a model and its checkpoint metadata:
the streaming features of the checkpoint's feature spec, its normalisation, the fastest predictor, the
decision policy the checkpoint's task asks for (:mod:`convnext_fast.trading.decision`, the backtest's
own) and the paper broker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..trading.backtest import BacktestConfig
from ..trading.broker import PaperBroker
from ..trading.decision import DecisionPolicy
from .loop import LiveEngine
from .predictor import make_predictor

DEFAULT_WINDOW = 256


@dataclass(frozen=True)
class DecisionRule:
    """The user's decision settings: the threshold τ handed to the checkpoint's
    :class:`~convnext_fast.trading.decision.DecisionPolicy` (a probability for a classifier, a return for
    a regression model) and a fixed ``size`` fraction of equity for every entry."""

    threshold: float = 0.5
    size: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.threshold < 1.0:  # for a regression model too: a 100 % return is no threshold
            raise UserError(f"--threshold must be in [0, 1), got {self.threshold}")
        if not self.size > 0:
            raise UserError(f"--size must be > 0 (a fraction of equity), got {self.size}")

    def size_for(self, signal: int, probs: np.ndarray | None) -> float:
        return self.size if signal != 0 else 0.0


def normaliser(norm: dict | None):
    """Per-bar form of the trainer's ``clip((x - mean) / std)`` (None: features go in raw)."""
    if norm is None:
        return None
    if "clip" in norm:
        clip = np.float32(norm["clip"])
    else:  # older metadata: the trainer's default
        from ..train.prepare import FEATURE_CLIP

        clip = np.float32(FEATURE_CLIP)
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    out = np.empty_like(mean)

    # The same float32 operations in the same order as the trainer's batch normalisation (a reciprocal
    # multiply would differ in the last bit and could flip a decision sitting on the threshold).
    def normalize(vec: np.ndarray) -> np.ndarray:
        np.subtract(vec, mean, out=out)
        np.divide(out, std, out=out)
        return np.clip(out, -clip, clip, out=out)

    return normalize


def window_of(meta: dict, override: int | None = None) -> int:
    """The window length T the model was trained on (``--window`` overrides)."""
    window = override or meta.get("window") or meta.get("train_config", {}).get("window") or DEFAULT_WINDOW
    if int(window) < 32:
        raise UserError(f"--window must be >= 32 (the model's total stride), got {window}")
    return int(window)


def build_engine(
    model: torch.nn.Module,
    meta: dict,
    *,
    rule: DecisionRule,
    broker: PaperBroker | None = None,
    backtest_config: BacktestConfig | None = None,
    backend: str = "auto",
    window: int | None = None,
    max_jump: float | None = None,
) -> tuple[LiveEngine, str]:
    """``(engine, backend_used)`` for ``model`` with ``meta`` holding ``feature_spec`` and (optionally)
    ``normalisation``, ``task`` and ``target_scale`` as the trainer writes them. A checkpoint whose
    outputs this loop cannot trade is refused here, with one line."""
    from ..features.pipeline import FeatureSpec, StreamingFeatures

    spec = FeatureSpec.from_dict(meta["feature_spec"]) if meta.get("feature_spec") else FeatureSpec()
    in_chans = model.config["in_chans"]
    if spec.n_channels != in_chans:
        raise UserError(
            f"the feature spec makes {spec.n_channels} channels but the model expects in_chans={in_chans}"
        )
    policy = DecisionPolicy.from_meta(
        {**meta, "model": {**meta.get("model", {}), **model.config}}, rule.threshold
    )
    predict, used = make_predictor(model, backend)
    engine = LiveEngine(
        features=StreamingFeatures(spec),
        predict=predict,
        broker=broker or PaperBroker(backtest_config),
        window=window_of(meta, window),
        n_channels=in_chans,
        policy=policy,
        size_fn=rule.size_for,
        normalize=normaliser(meta.get("normalisation")),
        warmup_bars=spec.warmup,
        max_jump=max_jump,
    )
    return engine, used
