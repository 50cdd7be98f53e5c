"""The one decision path: a checkpoint's raw model outputs → trading signals, for every task the trainer
writes.

* ``classification`` (3 logits, class order ``[Long, Short, Hold]``): softmax in float64, then
  :func:`~convnext_fast.trading.signals.signals_from_probs` (Long/Short above τ and above the other side).
* ``regression`` (one output per horizon, trained on returns divided by ``target_scale``): the first
  horizon's output times its scale is a forward return; Long above τ, Short below −τ
  (:func:`~convnext_fast.trading.signals.signals_from_regression`).

The checkpoint's metadata (:class:`~convnext_fast.trading.model_meta.ModelMeta`, implemented by ``train.checkpoint.CheckpointMeta``) says which (``task``,
the model config's ``num_outputs``/``num_classes``, ``target_scale``); :meth:`DecisionPolicy.from_meta` refuses, in one line, a checkpoint it cannot read
unambiguously, so nothing is ever traded as the wrong task. Backtest (batch, :meth:`DecisionPolicy.batch`),
demo and the live loop (one bar, :meth:`DecisionPolicy.one`) all call this module, so a bar gets the same
decision everywhere: the one-bar form is the batch form on a single row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError
from ._checks import check_non_negative, check_threshold
from .signals import (
    HOLD,
    signal_from_probs_nb,
    signal_from_return_nb,
    signals_from_probs,
    signals_from_regression,
)

if TYPE_CHECKING:  # metadata is read by attribute only; importing the checkpoint module would pull torch
    from .model_meta import ModelMeta

TASKS = ("classification", "regression")
_HOLD_PROBS = np.array([0.0, 0.0, 1.0])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (the same arithmetic for a batch and for one bar)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class DecisionPolicy:
    """How raw outputs become signals. ``threshold`` is τ: a probability for classification, a forward
    return (e.g. 0.002 = 0.2 %) for regression. ``scale`` turns the first regression output back into
    return units."""

    task: str
    n_outputs: int
    threshold: float
    scale: float = 1.0

    def __post_init__(self):
        if self.task not in TASKS:
            raise UserError(f"task {self.task!r} cannot be traded (known: {', '.join(TASKS)})")
        # Checked once here; the one-bar hot path relies on it.
        check = check_threshold if self.task == "classification" else check_non_negative
        object.__setattr__(self, "threshold", float(check("threshold", self.threshold)))

    @classmethod
    def from_meta(cls, meta: ModelMeta, threshold: float, where: str = "checkpoint") -> DecisionPolicy:
        """The policy a checkpoint's metadata asks for; :class:`UserError` (one line) when it is ambiguous
        or a task this module cannot trade."""
        return cls.for_task(meta.task, meta.model, meta.target_scale, threshold, where)

    @classmethod
    def for_task(
        cls,
        task: str,
        model_config: Mapping,
        target_scale,
        threshold: float,
        where: str = "checkpoint",
    ) -> DecisionPolicy:
        """The policy for a model of ``task`` with ``model_config`` (``num_classes``/``num_outputs``) and,
        for regression, the per-output ``target_scale`` the trainer divided the targets by."""
        if task == "classification":
            classes = int(model_config.get("num_classes", 3))
            if classes != 3:
                raise UserError(
                    f"{where}: a classifier with {classes} classes cannot be traded (needs Long, Short, Hold)"
                )
            return cls("classification", 3, float(threshold))
        if task == "regression":
            n = int(model_config.get("num_outputs", 1))
            scale = target_scale
            if not isinstance(scale, (list, tuple)) or len(scale) != n or not n:
                raise UserError(
                    f"{where}: a regression checkpoint needs target_scale with one entry per output "
                    f"({n}), got {scale!r}"
                )
            if not (np.isfinite(scale[0]) and scale[0] > 0):
                raise UserError(f"{where}: target_scale[0] must be finite and > 0, got {scale[0]!r}")
            return cls("regression", n, float(threshold), float(scale[0]))
        raise UserError(f"{where}: task {task!r} cannot be traded (known: {', '.join(TASKS)})")

    @property
    def classification(self) -> bool:
        return self.task == "classification"

    def batch(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """``outputs [N, n_outputs]`` raw (logits or scaled returns; a NaN row = no complete window yet)
        → ``(signals int8 [N], probs [N, 3] or None, score [N])``. Rows without outputs are Hold (probs
        Hold, score NaN). ``score`` is the predicted return for regression, max(p_long, p_short) else."""
        out = np.asarray(outputs, dtype=np.float64)
        if out.ndim != 2 or out.shape[1] != self.n_outputs:
            raise UserError(f"model outputs must have shape [N, {self.n_outputs}], got {out.shape}")
        known = np.isfinite(out).all(axis=1)
        if self.classification:
            probs = np.tile(_HOLD_PROBS, (len(out), 1))
            probs[known] = softmax(out[known])
            score = np.where(known, probs[:, :2].max(axis=1), np.nan)
            return self.batch_probs(probs), probs, score
        pred = np.where(known, out[:, 0] * self.scale, np.nan)
        return signals_from_regression(np.nan_to_num(pred, nan=0.0), self.threshold), None, pred

    def batch_probs(self, probs: np.ndarray) -> np.ndarray:
        """Signals ``int8 [N]`` from class probabilities ``[N, 3]`` already computed (e.g. the trainer's saved
        test predictions): the rule :meth:`batch` applies after its softmax."""
        if not self.classification:
            raise UserError(f"a {self.task} policy decides on model outputs, not class probabilities")
        return signals_from_probs(probs, self.threshold)

    def one(self, output_row: np.ndarray) -> tuple[int, np.ndarray | None, float]:
        """The one-bar form of :meth:`batch`: ``(signal, probs [3] or None, score)``. The same float64
        arithmetic and comparisons as the batch rule, without its array checks (the live loop's hot path;
        tests assert both agree)."""
        out = np.asarray(output_row, dtype=np.float64)
        if out.shape != (self.n_outputs,):
            raise UserError(f"model outputs must have shape [{self.n_outputs}], got {out.shape}")
        tau = self.threshold
        if not np.isfinite(out).all():
            return HOLD, (_HOLD_PROBS.copy() if self.classification else None), float("nan")
        if self.classification:
            probs = softmax(out[None])[0]
            p_long, p_short = float(probs[0]), float(probs[1])
            return int(signal_from_probs_nb(p_long, p_short, tau)), probs, max(p_long, p_short)
        pred = float(out[0] * self.scale)
        return int(signal_from_return_nb(pred, tau)), None, pred

    def hold(self) -> tuple[int, None, float]:
        return HOLD, None, float("nan")
