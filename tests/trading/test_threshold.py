"""τ chosen on validation bars through the one decision path, and ``--threshold auto`` resolution."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
import pytest

from convnext_fast.cli.argtypes import threshold_or_auto as threshold_option
from convnext_fast.errors import UserError
from convnext_fast.trading.backtest import BacktestConfig, run_backtest
from convnext_fast.trading.decision import DecisionPolicy
from convnext_fast.trading.threshold import (
    CLASSIFICATION_GRID,
    resolve_threshold,
    select_threshold,
    threshold_grid,
)
from tests.trading.market import random_bars


def _logits_for(confidence: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Logits whose softmax gives ``confidence`` to Long (side +1) or Short (side -1), the rest split
    evenly; side 0 bars are Hold-leaning."""
    p_call = np.where(side != 0, confidence, 0.2)
    other = (1 - p_call) / 2
    long_ = np.where(side > 0, p_call, other)
    short = np.where(side < 0, p_call, other)
    return np.log(np.stack([long_, short, 1 - long_ - short], axis=1))


def test_selection_ignores_a_tau_that_trades_too_rarely(rng):
    """High-confidence bars are a handful of lucky trades; the τ that trades enough must win even though
    the rare one has the higher Sharpe."""
    n = 2000
    o, h, lo, c = random_bars(rng, n)
    # Long and Short alternate at confidence 0.55 every 20 bars (each call flips the position: about 100
    # trades); 0.95 only twice. Hold keeps a position, so only flips close trades.
    confidence, side = np.full(n, 0.2), np.zeros(n)
    side[::20] = np.resize([1, -1], len(side[::20]))
    confidence[::20] = 0.55
    confidence[[100, 900]], side[[100, 900]] = 0.95, [1, -1]
    outputs = _logits_for(confidence, side)
    policy = DecisionPolicy("classification", 3, 0.5)
    choice = select_threshold(policy, outputs, o, h, lo, c, periods_per_year=8760, min_trades=30)
    k = choice.grid.index(choice.threshold)
    assert choice.n_trades[k] >= 30
    assert all(t >= 30 or tau >= 0.55 for tau, t in zip(choice.grid, choice.n_trades, strict=True))
    # every grid row is what the one decision path and the backtest give at that τ
    for j in (0, k, len(choice.grid) - 1):
        signals, _, _ = DecisionPolicy("classification", 3, choice.grid[j]).batch(outputs)
        result = run_backtest(o, h, lo, c, signals, 1.0, BacktestConfig())
        assert len(result.trades) == choice.n_trades[j]
        assert result.equity[-1] / result.equity[0] - 1 == choice.total_return[j]
        if (result.equity <= 0).any():  # a τ that wipes the account out must never win
            assert choice.sharpe[j] == -np.inf and j != k
    eligible = [j for j, t in enumerate(choice.n_trades) if t >= 30]
    assert choice.sharpe[k] == max(choice.sharpe[j] for j in eligible)
    assert ">= 30 trades" in choice.rule


def test_when_no_tau_trades_enough_the_most_trading_one_is_taken_and_said(rng):
    n = 500
    o, h, lo, c = random_bars(rng, n)
    confidence, side = np.full(n, 0.2), np.zeros(n)
    confidence[[50, 150, 250, 350]], side[[50, 150, 250, 350]] = [0.6, 0.6, 0.6, 0.7], [1, -1, 1, -1]
    choice = select_threshold(
        DecisionPolicy("classification", 3, 0.5),
        _logits_for(confidence, side),
        o,
        h,
        lo,
        c,
        periods_per_year=8760,
    )
    assert choice.n_trades[choice.grid.index(choice.threshold)] == max(choice.n_trades)
    assert choice.threshold < 0.6 and "no τ made 30 validation trades" in choice.rule
    assert choice.to_dict()["sharpe"][-1] is None  # the τ that never trades has no Sharpe (strict JSON)


def test_regression_grid_sits_on_the_predicted_return_scale(rng):
    scaled = rng.normal(0, 1, (400, 1))
    scaled[:10] = np.nan  # no window yet
    policy = DecisionPolicy("regression", 1, 0.0, scale=0.004)
    grid = threshold_grid(policy, scaled)
    pred = np.abs(scaled[10:, 0] * 0.004)
    assert grid[0] == pytest.approx(pred.min()) and grid[-1] == pytest.approx(np.quantile(pred, 0.98))
    # Never the classifier's 0.5: every τ is one the forecasts actually reach.
    assert grid.max() <= pred.max() < 0.5
    assert threshold_grid(DecisionPolicy("classification", 3, 0.5), scaled).tolist() == list(
        CLASSIFICATION_GRID
    )


def test_threshold_option_and_resolution():
    assert threshold_option("auto") == "auto" and threshold_option("0.45") == 0.45
    with pytest.raises(argparse.ArgumentTypeError, match="'auto'"):
        threshold_option("high")
    meta = SimpleNamespace(threshold=0.42)  # the one field of trading.model_meta.ModelMeta it reads
    assert resolve_threshold(None, meta, "checkpoint a") == (
        0.42,
        "chosen on the validation bars of checkpoint a",
    )
    assert resolve_threshold("auto", meta, "checkpoint a")[0] == 0.42
    assert resolve_threshold(0.6, meta, "checkpoint a") == (0.6, "--threshold")
    assert resolve_threshold(None, None, "--probs", fallback=0.5)[0] == 0.5
    with pytest.raises(UserError, match=r"has no validation-chosen threshold.*--threshold NUMBER"):
        resolve_threshold("auto", SimpleNamespace(threshold=None), "checkpoint old.safetensors")
    with pytest.raises(UserError, match="needs a --checkpoint"):
        resolve_threshold("auto", None, "--probs", fallback=0.5)
