"""Test-set metrics and the naive baselines they must be read against.

Every model score is reported next to baselines computed on the *same* test bars, so a 52 % hit rate is
never mistaken for skill: ``majority_class`` (the train split's most common class, with the train class
frequencies as its probabilities) and ``previous_bar_direction`` (Long after an up bar, Short after a
down bar)."""

from __future__ import annotations

import numpy as np

LONG, SHORT, HOLD = 0, 1, 2
N_CLASSES = 3
_PROB_FLOOR = 1e-12


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = N_CLASSES) -> np.ndarray:
    """Counts ``[true, predicted]``."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _per_class_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return recall, f1, (support > 0) | (predicted > 0)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray | None = None) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present), macro F1 (over classes present
    in truth or prediction, as scikit-learn does), confusion matrix, log loss (when ``probs`` are given)
    and direction accuracy: on bars whose truth is Long or Short, how often the call was the right one of
    the two (from ``p_long`` vs ``p_short`` when ``probs`` are given, else from a Long/Short prediction)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_pred must be equal-length non-empty 1-D, got {y_true.shape}, {y_pred.shape}"
        )
    if y_true.min() < 0 or max(y_true.max(), y_pred.max()) >= N_CLASSES or y_pred.min() < 0:
        raise ValueError(
            f"class labels must be in [0, {N_CLASSES}); unknown-future bars (-1) must be dropped first"
        )
    cm = confusion_matrix(y_true, y_pred)
    recall, f1, seen = _per_class_recall_f1(cm)
    directional = y_true != HOLD
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        if probs.shape != (len(y_true), N_CLASSES):
            raise ValueError(f"probs must have shape ({len(y_true)}, {N_CLASSES}), got {probs.shape}")
        called_long = probs[:, LONG] >= probs[:, SHORT]
    else:
        called_long = y_pred == LONG
    hits = called_long[directional] == (y_true[directional] == LONG)
    out = {
        "n": len(y_true),
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(recall[cm.sum(axis=1) > 0].mean()),
        "macro_f1": float(f1[seen].mean()),
        "direction_accuracy": float(hits.mean()) if hits.size else float("nan"),
        "n_directional": int(directional.sum()),
        "confusion": cm.tolist(),
        "log_loss": float("nan"),
    }
    if probs is not None:
        p_true = np.clip(probs[np.arange(len(y_true)), y_true], _PROB_FLOOR, 1.0)
        out["log_loss"] = float(-np.mean(np.log(p_true)))
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_x)) + 1]
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends - 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """Per horizon: information coefficient (Pearson), rank IC (Spearman), direction accuracy (sign hit
    rate on non-zero targets) and MSE; plus their means over horizons."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.ndim == 1:
        pred, target = pred[:, None], target.reshape(len(target), -1)
    if pred.shape != target.shape or len(pred) < 2:
        raise ValueError(
            f"pred and target must have the same shape [N>=2, H], got {pred.shape}, {target.shape}"
        )
    ic, rank_ic, hit, mse = [], [], [], []
    for h in range(pred.shape[1]):
        p, t = pred[:, h], target[:, h]
        ic.append(_pearson(p, t))
        rank_ic.append(_pearson(_ranks(p), _ranks(t)))
        moved = t != 0
        hit.append(float(np.mean(np.sign(p[moved]) == np.sign(t[moved]))) if moved.any() else float("nan"))
        mse.append(float(np.mean((p - t) ** 2)))
    return {
        "n": len(pred),
        "ic": float(np.mean(ic)),
        "rank_ic": float(np.mean(rank_ic)),
        "direction_accuracy": float(np.mean(hit)),
        "ic_per_horizon": ic,
        "rank_ic_per_horizon": rank_ic,
        "direction_accuracy_per_horizon": hit,
        "mse": float(np.mean(mse)),
    }


def previous_bar_return(close: np.ndarray, end_idx: np.ndarray) -> np.ndarray:
    """Return of the window's newest bar, ``close[t] / close[t-1] - 1`` (0 for the very first bar)."""
    close = np.asarray(close, dtype=np.float64)
    end_idx = np.asarray(end_idx, dtype=np.int64)
    prev = close[np.maximum(end_idx - 1, 0)]
    return close[end_idx] / prev - 1.0


def classification_baselines(
    y_test: np.ndarray, train_prior: np.ndarray, close: np.ndarray, end_idx: np.ndarray
) -> dict:
    """Naive scores on the same test bars: the train-majority class (its probabilities are the train class
    frequencies ``train_prior``, ``[3]`` or one row per test bar when pooling folds) and the previous
    bar's direction (Long after an up bar, else Short; a hard call, so no log loss)."""
    n = len(y_test)
    prior = np.broadcast_to(np.asarray(train_prior, dtype=np.float64), (n, N_CLASSES))
    prev_up = previous_bar_return(close, end_idx) > 0
    return {
        "majority_class": classification_metrics(y_test, prior.argmax(axis=1), prior),
        "previous_bar_direction": classification_metrics(y_test, np.where(prev_up, LONG, SHORT)),
    }


def class_prior(y_train: np.ndarray) -> np.ndarray:
    """Train class frequencies ``[3]``: the majority baseline's probabilities."""
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=N_CLASSES).astype(np.float64)
    if counts.sum() == 0:
        raise ValueError("y_train is empty; the majority baseline needs train labels")
    return counts / counts.sum()


def regression_baselines(
    target_test: np.ndarray, train_sign: np.ndarray, close: np.ndarray, end_idx: np.ndarray
) -> dict:
    """Naive scores on the same test bars: a constant forecast with the sign of the train mean return
    (``train_sign``, ``[H]`` or one row per bar; its IC is undefined, its hit rate is the "always long"
    or "always short" rate) and the previous bar's return as the forecast of every horizon (momentum)."""
    target_test = np.asarray(target_test, dtype=np.float64).reshape(len(target_test), -1)
    constant = np.broadcast_to(np.asarray(train_sign, dtype=np.float64), target_test.shape)
    previous = np.repeat(previous_bar_return(close, end_idx)[:, None], target_test.shape[1], axis=1)
    return {
        "majority_class": regression_metrics(constant, target_test),
        "previous_bar_direction": regression_metrics(previous, target_test),
    }


def mean_sign(target_train: np.ndarray) -> np.ndarray:
    """``+1``/``-1`` per horizon: the sign of the train mean return."""
    mean = np.nanmean(np.asarray(target_train, dtype=np.float64).reshape(len(target_train), -1), axis=0)
    return np.where(mean >= 0, 1.0, -1.0)


def score(
    task: str,
    outputs: np.ndarray,
    targets: np.ndarray,
    close: np.ndarray,
    end_idx: np.ndarray,
    naive: np.ndarray,
) -> dict:
    """Model metrics and the baselines on the same bars. ``outputs`` are class probabilities (classification)
    or return forecasts (regression); ``naive`` is the train prior / train mean sign (see the baselines)."""
    if task == "classification":
        return {
            "model": classification_metrics(targets, outputs.argmax(axis=1), outputs),
            "baselines": classification_baselines(targets, naive, close, end_idx),
        }
    return {
        "model": regression_metrics(outputs, targets),
        "baselines": regression_baselines(targets, naive, close, end_idx),
    }
