"""The verdict's numbers, checked against cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convnext_fast.trading.verdict import (
    MIN_TRADES_FOR_SHARPE,
    MarketCheck,
    SkillCheck,
    buy_and_hold,
    class_prior_log_loss,
    classification_skill,
    few_trades_warning,
    regression_skill,
    skill_from_scores,
    verdict_line,
)


def test_classification_skill_by_hand():
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]])
    prior = np.array([0.2, 0.3, 0.5])  # the training labels' frequencies: majority class Hold
    check = classification_skill(y, probs, prior)
    assert check.accuracy == 0.75  # arg-max right on bars 0, 1, 3
    assert check.baseline_accuracy == 0.5  # "always Hold" is right on bars 2, 3
    assert check.log_loss == pytest.approx(
        -(math.log(0.5) + math.log(0.5) + math.log(0.2) + math.log(0.8)) / 4
    )
    assert check.baseline_log_loss == pytest.approx(-(math.log(0.2) + math.log(0.3) + 2 * math.log(0.5)) / 4)
    assert check.log_loss == pytest.approx(0.8047, abs=1e-4) and check.baseline_log_loss == pytest.approx(
        1.0499, abs=1e-4
    )
    assert check.beats_accuracy and check.beats_log_loss


def test_class_prior_log_loss_is_the_entropy_when_prior_matches_the_labels():
    y = np.array([0, 0, 1, 2])
    prior = np.array([0.5, 0.25, 0.25])
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert class_prior_log_loss(y, prior) == pytest.approx(entropy)


def test_regression_skill_counts_sign_hits_on_bars_that_moved():
    pred = np.array([0.01, -0.02, 0.03, 0.01, np.nan])
    target = np.array([0.02, 0.01, 0.0, -0.01, 0.05])  # bar 2 did not move, bar 4 has no forecast
    check = regression_skill(pred, target, train_sign=1.0)
    assert check.n == 3
    assert check.accuracy == pytest.approx(1 / 3)  # only bar 0 has the right sign
    assert check.baseline_accuracy == pytest.approx(2 / 3)  # "always up": bars 0 and 1
    assert check.log_loss is None and "train-mean sign" in check.phrase()


def test_buy_and_hold_return_and_sharpe_by_hand():
    close = np.array([100.0, 110.0, 99.0, 108.9])  # returns +10 %, -10 %, +10 %
    total, sharpe = buy_and_hold(close, periods_per_year=4)
    assert total == pytest.approx(0.089)
    r = np.array([0.1, -0.1, 0.1])
    assert sharpe == pytest.approx(r.mean() / r.std(ddof=1) * 2.0)
    _, flat = buy_and_hold(np.full(5, 7.0), 365)
    assert math.isnan(flat)  # no variance, no Sharpe
    with pytest.raises(ValueError, match="2 finite positive closes"):
        buy_and_hold(np.array([1.0]), 365)


@pytest.mark.parametrize(
    ("n", "warned"), [(0, True), (1, True), (MIN_TRADES_FOR_SHARPE - 1, True), (MIN_TRADES_FOR_SHARPE, False)]
)
def test_few_trades_warning_states_the_threshold(n, warned):
    warning = few_trades_warning(n)
    assert (warning is not None) == warned
    if warned:
        assert f"only {n} trade" in warning and f"fewer than {MIN_TRADES_FOR_SHARPE} trades" in warning


def test_verdict_line_says_who_wins_and_warns():
    skill = SkillCheck("classification", 200, 0.40, 0.45, 1.05, 1.08)
    market = MarketCheck(total_return=0.49, sharpe=1.2, hold_return=0.10, hold_sharpe=0.5, n_trades=1)
    line = verdict_line(skill, market, "test bars")
    assert line.startswith("verdict (test bars): ")
    assert "accuracy 40.0% loses to majority class 45.0%" in line
    assert "log loss 1.0500 beats class prior 1.0800" in line
    assert "strategy return +49.00% beats buy-and-hold +10.00%" in line and "Sharpe 1.20 beats 0.50" in line
    assert "WARNING only 1 trade:" in line
    enough = MarketCheck(-0.05, -0.3, 0.02, 0.4, MIN_TRADES_FOR_SHARPE)
    line = verdict_line(None, enough, no_skill="no labels")
    assert "no baseline comparison (no labels)" in line and "loses to buy-and-hold" in line
    assert "WARNING" not in line


def test_skill_from_the_trainers_scores():
    scores = {
        "model": {"n": 10, "accuracy": 0.5, "log_loss": 1.0, "direction_accuracy": 0.6},
        "baselines": {
            "majority_class": {"n": 10, "accuracy": 0.4, "log_loss": 1.1, "direction_accuracy": 0.55}
        },
    }
    assert skill_from_scores("classification", scores) == SkillCheck("classification", 10, 0.5, 0.4, 1.0, 1.1)
    assert skill_from_scores("regression", scores) == SkillCheck("regression", 10, 0.6, 0.55)
