"""Signals from class probabilities and regression outputs: the rule, its one-bar twin, and input errors."""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.trading.signals import (
    signal_from_probs,
    signal_from_regression,
    signals_from_probs,
    signals_from_regression,
)


def test_probability_rule_on_hand_picked_rows():
    probs = [
        [0.70, 0.20, 0.10],  # confident Long
        [0.20, 0.65, 0.15],  # confident Short
        [0.55, 0.40, 0.05],  # Long but not above τ = 0.6
        [0.10, 0.10, 0.80],  # Hold
        [0.60, 0.30, 0.10],  # exactly τ is not above it
        [0.45, 0.45, 0.10],  # a tie is Hold even when τ is low
    ]
    np.testing.assert_array_equal(signals_from_probs(probs, 0.6), [1, -1, 0, 0, 0, 0])
    np.testing.assert_array_equal(signals_from_probs(probs, 0.3), [1, -1, 1, 0, 1, 0])


def test_vectorised_and_one_bar_forms_agree_with_the_rule(rng):
    probs = rng.dirichlet([1.0, 1.0, 1.0], 400)
    tau = float(rng.uniform(0.2, 0.7))
    batch = signals_from_probs(probs, tau)
    assert batch.dtype == np.int8
    expected = [
        1 if pl > tau and pl > ps else -1 if ps > tau and ps > pl else 0 for pl, ps, _ in probs.tolist()
    ]
    np.testing.assert_array_equal(batch, expected)
    assert [signal_from_probs(*row, tau) for row in probs.tolist()] == batch.tolist()
    assert set(batch.tolist()) == {-1, 0, 1}


def test_regression_signals(rng):
    pred = rng.normal(0.0, 0.01, 300)
    tau = 0.004
    signal = signals_from_regression(pred, tau)
    np.testing.assert_array_equal(signal, np.where(pred > tau, 1, np.where(pred < -tau, -1, 0)))
    assert signal_from_regression(0.01, tau) == 1 and signal_from_regression(-0.01, tau) == -1
    assert signal_from_regression(0.004, tau) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: signals_from_probs([[0.5, 0.3, 0.2]], 1.5), r"threshold must be in \[0, 1\]"),
        (lambda: signals_from_probs([[0.5, 0.3, 0.2]], -0.1), r"threshold must be in \[0, 1\]"),
        (lambda: signals_from_probs([[0.5, 0.5]], 0.5), r"probs must have shape \[N, 3\]"),
        (lambda: signals_from_probs([[np.nan, 0.5, 0.5]], 0.5), "probs has NaN"),
        (lambda: signals_from_probs([[2.0, -1.0, 0.0]], 0.5), "softmax"),
        (lambda: signal_from_probs(0.5, 0.3, 0.2, 2.0), "threshold"),
        (lambda: signals_from_regression([0.1, np.inf], 0.0), "pred has NaN/Inf"),
        (lambda: signals_from_regression([0.1], -0.01), "threshold must be a finite number >= 0"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
