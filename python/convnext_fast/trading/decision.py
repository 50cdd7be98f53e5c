"""The one decision path: a checkpoint's raw model outputs → trading signals, for every task the trainer
writes.

* ``classification`` (3 logits, class order ``[Long, Short, Hold]``): softmax in float64, then
  :func:`~convnext_fast.trading.signals.signals_from_probs` (Long/Short above τ and above the other side).
* ``regression`` (one output per horizon, trained on returns divided by ``target_scale``): the first
  horizon's output times its scale is a forward return; Long above τ, Short below −τ
  (:func:`~convnext_fast.trading.signals.signals_from_regression`).

The checkpoint's metadata says which (``meta["model"]["task"]``, ``num_outputs``/``num_classes``,
``target_scale``); :meth:`DecisionPolicy.from_meta` refuses, in one line, a checkpoint it cannot read
unambiguously, so nothing is ever traded as the wrong task. Backtest (batch, :meth:`DecisionPolicy.batch`),
demo and the live loop (one bar, :meth:`DecisionPolicy.one`) all call this module, so a bar gets the same
decision everywhere: the one-bar form is the batch form on a single row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ._checks import check_non_negative, check_threshold
from .signals import HOLD, LONG, SHORT, signals_from_probs, signals_from_regression

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
    def from_meta(cls, meta: dict, threshold: float, where: str = "checkpoint") -> DecisionPolicy:
        """The policy a checkpoint's metadata asks for; :class:`UserError` (one line) when it is ambiguous
        or a task this module cannot trade."""
        model = meta.get("model") or {}
        task = model.get("task", meta.get("task", "classification"))
        if meta.get("task") not in (None, task):
            raise UserError(f"{where}: metadata says task {meta['task']!r} but the model is {task!r}")
        if task == "classification":
            classes = int(model.get("num_classes", 3))
            if classes != 3:
                raise UserError(
                    f"{where}: a classifier with {classes} classes cannot be traded (needs Long, Short, Hold)"
                )
            return cls("classification", 3, float(threshold))
        if task == "regression":
            n = int(model.get("num_outputs", 1))
            scale = meta.get("target_scale")
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
            return signals_from_probs(probs, self.threshold), probs, score
        pred = np.where(known, out[:, 0] * self.scale, np.nan)
        return signals_from_regression(np.nan_to_num(pred, nan=0.0), self.threshold), None, pred

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
            if p_long > tau and p_long > p_short:
                return LONG, probs, p_long
            if p_short > tau and p_short > p_long:
                return SHORT, probs, p_short
            return HOLD, probs, max(p_long, p_short)
        pred = float(out[0] * self.scale)
        return (LONG if pred > tau else SHORT if pred < -tau else HOLD), None, pred

    def hold(self) -> tuple[int, None, float]:
        return HOLD, None, float("nan")
