"""The one-line verdict ``train``, ``backtest`` and ``demo`` print: does the model beat the naive baselines
on the same bars, and does the strategy beat buy-and-hold on the same bars?

Two checks, computed here and nowhere else:

* :class:`SkillCheck` — the model against the naive predictor on the same labelled bars: accuracy against
  the training labels' majority class, log loss against the training class prior (classification); sign
  hit rate against "always the sign of the training mean return" (regression).
* :class:`MarketCheck` — the strategy's net return and Sharpe (fees included) against buying at the first
  bar's close and holding to the last (no fees: the most flattering baseline for doing nothing).

A Sharpe ratio over a handful of trades is noise, so every verdict and sweep row with fewer than
:data:`MIN_TRADES_FOR_SHARPE` trades carries :func:`few_trades_warning`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .model_meta import ModelMeta

from ._checks import TradingInputError, as_float_array, check_positive

# Below ~30 trades the standard error of a per-trade mean is as large as the mean for typical signal-to-
# noise, so a Sharpe ratio (and the total return) says little about skill.
MIN_TRADES_FOR_SHARPE = 30
_PROB_FLOOR = 1e-12


def few_trades_warning(n_trades: int) -> str | None:
    """The warning for a result with too few trades to judge (None when there are enough)."""
    n = int(n_trades)
    if n >= MIN_TRADES_FOR_SHARPE:
        return None
    return (
        f"only {n} trade{'s' if n != 1 else ''}: with fewer than {MIN_TRADES_FOR_SHARPE} trades the Sharpe "
        "ratio and the return are noise, not evidence"
    )


def _beats(ours: float, theirs: float, higher_is_better: bool = True) -> str:
    if not (math.isfinite(ours) and math.isfinite(theirs)):
        return "n/a"
    if ours == theirs:
        return "ties"
    return "beats" if (ours > theirs) == higher_is_better else "loses to"


@dataclass(frozen=True)
class SkillCheck:
    """Model vs the naive predictor on the same ``n`` bars. ``log_loss`` fields are None for regression."""

    task: str
    n: int
    accuracy: float  # classification accuracy, or sign hit rate (regression)
    baseline_accuracy: float
    log_loss: float | None = None
    baseline_log_loss: float | None = None

    @property
    def baseline_name(self) -> str:
        return "majority class" if self.task == "classification" else "train-mean sign"

    @property
    def beats_accuracy(self) -> bool:
        return self.accuracy > self.baseline_accuracy

    @property
    def beats_log_loss(self) -> bool | None:
        if self.log_loss is None or self.baseline_log_loss is None:
            return None
        return self.log_loss < self.baseline_log_loss

    def phrase(self) -> str:
        what = "accuracy" if self.task == "classification" else "direction hit rate"
        text = (
            f"model {what} {self.accuracy:.1%} {_beats(self.accuracy, self.baseline_accuracy)} "
            f"{self.baseline_name} {self.baseline_accuracy:.1%}"
        )
        if self.log_loss is not None and self.baseline_log_loss is not None:
            text += (
                f", log loss {self.log_loss:.4f} {_beats(self.log_loss, self.baseline_log_loss, False)} "
                f"class prior {self.baseline_log_loss:.4f}"
            )
        return text + f" (n={self.n})"


@dataclass(frozen=True)
class MarketCheck:
    """Strategy (net of fees and funding) vs buy-and-hold over the same bars."""

    total_return: float
    sharpe: float
    hold_return: float
    hold_sharpe: float
    n_trades: int

    @property
    def beats_return(self) -> bool:
        return self.total_return > self.hold_return

    @property
    def beats_sharpe(self) -> bool:
        return math.isfinite(self.sharpe) and (
            not math.isfinite(self.hold_sharpe) or self.sharpe > self.hold_sharpe
        )

    @property
    def warning(self) -> str | None:
        return few_trades_warning(self.n_trades)

    def phrase(self) -> str:
        return (
            f"strategy return {self.total_return:+.2%} {_beats(self.total_return, self.hold_return)} "
            f"buy-and-hold {self.hold_return:+.2%}, Sharpe {self.sharpe:.2f} "
            f"{_beats(self.sharpe, self.hold_sharpe)} {self.hold_sharpe:.2f} ({self.n_trades} trades)"
        )


def buy_and_hold(close, periods_per_year: float) -> tuple[float, float]:
    """``(total return, annualised Sharpe)`` of holding from the first close to the last, on the per-bar
    close-to-close returns (ddof=1, risk-free 0), as :func:`~convnext_fast.trading.metrics.compute_metrics`
    computes the strategy's."""
    c = as_float_array("close", close)
    if len(c) < 2 or not np.isfinite(c).all() or (c <= 0).any():
        raise TradingInputError("buy-and-hold needs at least 2 finite positive closes")
    ppy = check_positive("periods_per_year", periods_per_year)
    r = c[1:] / c[:-1] - 1.0
    std = r.std(ddof=1) if len(r) > 1 else float("nan")
    sharpe = float(r.mean() / std * np.sqrt(ppy)) if std > 0 else float("nan")
    return float(c[-1] / c[0] - 1.0), sharpe


def market_check(metrics, close, periods_per_year: float) -> MarketCheck:
    """The strategy's :class:`~convnext_fast.trading.metrics.Metrics` against buy-and-hold on ``close``
    (the same bars the backtest ran on)."""
    hold_return, hold_sharpe = buy_and_hold(close, periods_per_year)
    return MarketCheck(
        total_return=float(metrics.total_return),
        sharpe=float(metrics.sharpe),
        hold_return=hold_return,
        hold_sharpe=hold_sharpe,
        n_trades=int(metrics.total_trades),
    )


def class_prior_log_loss(y_true, prior) -> float:
    """Log loss of predicting the class frequencies ``prior [3]`` for every bar."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.clip(np.asarray(prior, dtype=np.float64)[y], _PROB_FLOOR, 1.0)
    return float(-np.mean(np.log(p)))


def classification_skill(y_true, probs, train_prior) -> SkillCheck:
    """Accuracy (arg-max of ``probs``) and log loss of the model on labelled bars ``y_true`` (class order
    Long, Short, Hold; unknown labels dropped first) against the training class prior ``train_prior``."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    prior = np.asarray(train_prior, dtype=np.float64)
    if y.ndim != 1 or p.shape != (len(y), 3) or prior.shape != (3,) or len(y) == 0:
        raise TradingInputError(
            f"need labels [N>0], probs [N, 3] and a prior [3]; got {y.shape}, {p.shape}, {prior.shape}"
        )
    p_true = np.clip(p[np.arange(len(y)), y], _PROB_FLOOR, 1.0)
    return SkillCheck(
        task="classification",
        n=len(y),
        accuracy=float(np.mean(p.argmax(axis=1) == y)),
        baseline_accuracy=float(np.mean(y == prior.argmax())),
        log_loss=float(-np.mean(np.log(p_true))),
        baseline_log_loss=class_prior_log_loss(y, prior),
    )


def regression_skill(pred, target, train_sign: float) -> SkillCheck:
    """Sign hit rate of forecasts ``pred`` on bars whose ``target`` return moved, against always calling
    ``train_sign`` (+1/-1, the sign of the training mean return)."""
    p, t = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    moved = np.isfinite(p) & np.isfinite(t) & (t != 0)
    if not moved.any():
        raise TradingInputError("no bar with a known non-zero target return to score the forecasts on")
    truth = np.sign(t[moved])
    return SkillCheck(
        task="regression",
        n=int(moved.sum()),
        accuracy=float(np.mean(np.sign(p[moved]) == truth)),
        baseline_accuracy=float(np.mean(truth == (1.0 if train_sign >= 0 else -1.0))),
    )


def skill_from_scores(task: str, scores: dict) -> SkillCheck:
    """The :class:`SkillCheck` of the trainer's test scores (``evaluate.score``'s ``{"model", "baselines"}``)."""
    model, base = scores["model"], scores["baselines"]["majority_class"]
    if task == "classification":
        return SkillCheck(
            task, int(model["n"]), model["accuracy"], base["accuracy"], model["log_loss"], base["log_loss"]
        )
    return SkillCheck(task, int(model["n"]), model["direction_accuracy"], base["direction_accuracy"])


def verdict_line(
    skill: SkillCheck | None, market: MarketCheck | None, where: str = "", no_skill: str = ""
) -> str:
    """One line: ``verdict (where): <skill>; <market>[; WARNING …]``; ``no_skill`` says why a missing
    skill check is missing."""
    parts = [x.phrase() for x in (skill, market) if x is not None]
    if skill is None and no_skill:
        parts.insert(0, f"no baseline comparison ({no_skill})")
    if market is not None and market.warning:
        parts.append("WARNING " + market.warning)
    head = f"verdict ({where})" if where else "verdict"
    return f"{head}: " + ("; ".join(parts) if parts else "nothing to judge")


def _train_bars(meta: ModelMeta, start_ms: np.ndarray) -> np.ndarray:
    """Mask of the bars inside the checkpoint's train range (empty when it names none)."""
    train = meta.ranges.get("train")
    if not train:
        return np.zeros(len(start_ms), dtype=bool)
    lo, hi = (np.datetime64(t, "ms").astype(np.int64) for t in train)
    return (start_ms >= lo) & (start_ms <= hi)


def checkpoint_skill(meta: ModelMeta, candles, probs, pred, first: int) -> tuple[SkillCheck | None, str]:
    """``(check or None, why none)`` of a checkpoint's outputs on the traded bars ``first:`` of
    ``candles``: labels remade with the checkpoint's own label spec; the naive predictor fitted on the bars
    of its train range (so ``--data`` must hold them). ``probs [N, 3]`` (classification) or ``pred [N]``
    (regression forecast returns), NaN where the model had no complete window (rows the decision path
    filled with Hold must be NaN here, or they would be scored as Hold predictions)."""
    from ..data.labels import LabelSpec, make_labels, regression_targets

    start_ms = np.asarray(candles.start_ms, dtype=np.int64)
    in_train = _train_bars(meta, start_ms)
    task = meta.task
    spec = meta.label_spec or {}
    traded = np.zeros(len(start_ms), dtype=bool)
    traded[first:] = True
    if task == "classification":
        if not spec or probs is None:
            return None, "the checkpoint has no label spec to score accuracy with"
        labels = make_labels(candles.close, candles.high, candles.low, LabelSpec.from_dict(spec))
        train_labels = labels[in_train & (labels >= 0)]
        if len(train_labels) == 0:
            return (
                None,
                "--data does not hold the checkpoint's training bars (the majority class comes from them)",
            )
        scored = traded & (labels >= 0) & np.isfinite(probs).all(axis=1)
        if not scored.any():
            return None, "no traded bar has both a model output and a known label"
        prior = np.bincount(train_labels, minlength=3) / len(train_labels)
        return classification_skill(labels[scored], probs[scored], prior), ""
    horizons = meta.horizons or (1,)
    target = regression_targets(candles.close, [int(horizons[0])])[:, 0].astype(np.float64)
    train_target = target[in_train & np.isfinite(target)]
    if len(train_target) == 0:
        return None, "--data does not hold the checkpoint's training bars (the naive sign comes from them)"
    scored = traded & np.isfinite(target) & np.isfinite(pred)
    if not (scored & (target != 0)).any():
        return None, "no traded bar has both a model forecast and a known return"
    return regression_skill(pred[scored], target[scored], float(np.sign(train_target.mean()) or 1.0)), ""
