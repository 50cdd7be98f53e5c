"""Batch prediction over candles: a checkpoint's model run on every complete window of a series, and the
decisions the one decision path (:mod:`convnext_fast.trading.decision`) makes from those outputs.

The batch side of what the live loop does bar by bar; the backtest and portfolio commands, the demo and the
parity tests call it, so a series is predicted one way everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .trading.decision import DecisionPolicy

if TYPE_CHECKING:
    from .train.checkpoint import CheckpointMeta

# Windows per forward pass: large enough to amortise the per-call overhead, small enough that a long
# series never holds all its activations at once.
PREDICT_BATCH = 512


def checkpoint_inputs(meta: CheckpointMeta, candles, symbol: str | None = None) -> np.ndarray:
    """``[C_in, N]`` model inputs of ``candles`` as the checkpoint was trained on them: its feature spec and
    normalisation, or a universe's per-symbol causal normalisation (and HTF / symbol channels)."""
    if meta.universe is not None:
        from .data.universe import model_inputs

        return model_inputs(candles, meta, symbol)
    from .features.pipeline import compute_features

    c = candles
    features = compute_features(c.open, c.high, c.low, c.close, c.volume, spec=meta.feature_spec)
    return meta.normalisation.apply(features)


def model_outputs(checkpoint: str, candles, symbol: str | None = None) -> tuple[np.ndarray, CheckpointMeta]:
    """Raw model outputs (logits, or scaled regression values) for every bar whose window is complete and
    finite, NaN rows elsewhere; and the checkpoint's metadata. :class:`DecisionPolicy` turns them into
    signals, the same way the live loop does bar by bar. ``symbol`` names the series for a model trained on
    a universe (its per-symbol inputs and symbol channel)."""
    import torch

    from .data.dataset import sliding_windows
    from .train.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint, allow_universe=True)
    windows, end_idx = sliding_windows(checkpoint_inputs(meta, candles, symbol), meta.window_length())
    rows = np.flatnonzero(np.isfinite(windows).all(axis=(1, 2)))
    chunks = [np.empty((0, meta.n_outputs))]
    with torch.inference_mode():
        for start in range(0, len(rows), PREDICT_BATCH):
            batch = np.ascontiguousarray(windows[rows[start : start + PREDICT_BATCH]])
            chunks.append(model(torch.from_numpy(batch)).double().numpy())
    outputs = np.full((len(candles), meta.n_outputs), np.nan)
    outputs[end_idx[rows]] = np.concatenate(chunks)
    return outputs, meta


def checkpoint_decisions(
    checkpoint: str, candles, threshold: float, symbol: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, CheckpointMeta, DecisionPolicy]:
    """``(signals, probs or None, meta, policy)`` of a checkpoint over ``candles``: the batch side of the
    one decision path (bars without a complete window are Hold)."""
    outputs, meta = model_outputs(checkpoint, candles, symbol)
    policy = DecisionPolicy.from_meta(meta, threshold, where=f"checkpoint {checkpoint!r}")
    signals, probs, _ = policy.batch(outputs)
    return signals, probs, meta, policy
