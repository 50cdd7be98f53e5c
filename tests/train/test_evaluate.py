"""Metrics and naive baselines against independent (loop / scipy) computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from convnext_fast.train import evaluate


def _random_probs(rng, n):
    logits = rng.normal(size=(n, 3)) * 2
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_classification_metrics_match_loop_definitions(rng):
    n = int(rng.integers(50, 300))
    y = rng.integers(0, 3, n)
    probs = _random_probs(rng, n)
    pred = probs.argmax(1)
    m = evaluate.classification_metrics(y, pred, probs)
    cm = np.zeros((3, 3), int)
    for t, p in zip(y, pred, strict=True):
        cm[t, p] += 1
    assert m["confusion"] == cm.tolist()
    recalls, f1s = [], []
    for c in range(3):
        tp, fn, fp = cm[c, c], cm[c].sum() - cm[c, c], cm[:, c].sum() - cm[c, c]
        recalls.append(tp / (tp + fn))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn)
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    assert m["accuracy"] == pytest.approx(np.trace(cm) / n)
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert m["macro_f1"] == pytest.approx(np.mean(f1s))
    assert m["log_loss"] == pytest.approx(-np.mean([np.log(probs[i, y[i]]) for i in range(n)]))
    directional = [i for i in range(n) if y[i] != 2]
    hits = [(probs[i, 0] >= probs[i, 1]) == (y[i] == 0) for i in directional]
    assert m["direction_accuracy"] == pytest.approx(np.mean(hits))
    assert m["n"] == n and m["n_directional"] == len(directional)


def test_classification_metrics_reject_unknown_labels_and_shapes(rng):
    y = rng.integers(0, 3, 10)
    with pytest.raises(ValueError, match="unknown-future"):
        evaluate.classification_metrics(np.r_[y, -1], np.r_[y, 0])
    with pytest.raises(ValueError, match="equal-length"):
        evaluate.classification_metrics(y, y[:-1])
    with pytest.raises(ValueError, match="probs"):
        evaluate.classification_metrics(y, y, np.ones((10, 2)))


def test_regression_metrics_match_scipy(rng):
    n = int(rng.integers(50, 300))
    target = rng.normal(size=(n, 2))
    pred = 0.3 * target + rng.normal(size=(n, 2))
    pred[: n // 5, 1] = 0.25  # ties, which rank IC must average
    m = evaluate.regression_metrics(pred, target)
    for h in range(2):
        assert m["ic_per_horizon"][h] == pytest.approx(stats.pearsonr(pred[:, h], target[:, h])[0])
        assert m["rank_ic_per_horizon"][h] == pytest.approx(stats.spearmanr(pred[:, h], target[:, h])[0])
        assert m["direction_accuracy_per_horizon"][h] == pytest.approx(
            np.mean(np.sign(pred[:, h]) == np.sign(target[:, h]))
        )
    assert m["ic"] == pytest.approx(np.mean(m["ic_per_horizon"]))


def test_baselines_use_the_train_prior_and_the_previous_bar(rng):
    n_bars = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
    end_idx = np.sort(rng.choice(np.arange(1, n_bars), 120, replace=False))
    y_test = rng.integers(0, 3, len(end_idx))
    y_train = rng.choice(3, 500, p=[0.2, 0.5, 0.3])
    prior = evaluate.class_prior(y_train)
    np.testing.assert_allclose(prior, np.bincount(y_train, minlength=3) / 500)
    out = evaluate.classification_baselines(y_test, prior, close, end_idx)
    majority = out["majority_class"]
    assert majority["accuracy"] == pytest.approx(np.mean(y_test == prior.argmax()))
    assert majority["log_loss"] == pytest.approx(-np.mean(np.log(prior[y_test])))
    expected_prev = np.array([0 if close[t] > close[t - 1] else 1 for t in end_idx])
    assert out["previous_bar_direction"]["accuracy"] == pytest.approx(np.mean(y_test == expected_prev))
    assert np.isnan(out["previous_bar_direction"]["log_loss"]), "a hard call has no log loss"


def test_regression_baselines_score_momentum_and_constant_sign(rng):
    n_bars = 300
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
    end_idx = np.arange(1, n_bars - 1)
    target = np.log(close[end_idx + 1] / close[end_idx])[:, None]
    sign = evaluate.mean_sign(rng.normal(0.1, 1, (50, 1)) * np.sign(rng.normal()))
    out = evaluate.regression_baselines(target, sign, close, end_idx)
    prev = close[end_idx] / close[end_idx - 1] - 1
    assert out["previous_bar_direction"]["ic"] == pytest.approx(stats.pearsonr(prev, target[:, 0])[0])
    assert out["majority_class"]["direction_accuracy"] == pytest.approx(
        np.mean(np.sign(target[:, 0]) == sign[0])
    )
