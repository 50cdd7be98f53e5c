"""Assembles a :class:`~convnext_fast.live.loop.LiveEngine` from a model and its checkpoint metadata:
the streaming features of the checkpoint's feature spec, its normalisation, the fastest predictor, the
decision policy the checkpoint's task asks for (:mod:`convnext_fast.trading.decision`, the backtest's
own) and the paper broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import UserError
from ..trading.backtest import BacktestConfig
from ..trading.broker import PaperBroker
from ..trading.decision import DecisionPolicy
from .loop import LiveEngine
from .predictor import make_predictor

if TYPE_CHECKING:
    from ..train.checkpoint import CheckpointMeta


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


def build_engine(
    model: torch.nn.Module,
    meta: CheckpointMeta,
    *,
    rule: DecisionRule,
    broker: PaperBroker | None = None,
    backtest_config: BacktestConfig | None = None,
    backend: str = "auto",
    window: int | None = None,
    max_jump: float | None = None,
) -> tuple[LiveEngine, str]:
    """``(engine, backend_used)`` for ``model`` and its checkpoint's metadata (the feature spec, the
    trainer's normalisation when it has one, task and target scale). A checkpoint whose outputs this loop
    cannot trade is refused here, with one line."""
    from ..features.pipeline import StreamingFeatures

    meta = meta.replace(model={**meta.model, **model.config})  # checks the spec's channels fit the model
    spec, in_chans = meta.feature_spec, meta.in_chans
    policy = DecisionPolicy.from_meta(meta, rule.threshold)
    predict, used = make_predictor(model, backend)
    engine = LiveEngine(
        features=StreamingFeatures(spec),
        predict=predict,
        broker=broker or PaperBroker(backtest_config),
        window=meta.window_length(window),
        n_channels=in_chans,
        policy=policy,
        size_fn=rule.size_for,
        # the trainer's own normaliser, one bar at a time (None: an untrained model takes raw features)
        normalize=None if meta.normalisation is None else meta.normalisation.per_bar(),
        warmup_bars=spec.warmup,
        max_jump=max_jump,
    )
    return engine, used
