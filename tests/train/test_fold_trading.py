"""τ is chosen on each fold's validation bars (never its test bars) through the one decision path, stored
in the checkpoint, and the test bars are traded at it against buy-and-hold on the same bars."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.trading.backtest import run_backtest
from convnext_fast.trading.decision import DecisionPolicy
from convnext_fast.trading.threshold import select_threshold
from convnext_fast.train import load_checkpoint, prepare, train
from convnext_fast.train.fold_trading import per_bar
from convnext_fast.train.inputs import WindowDataset, feature_matrix

from .test_trainer import tiny_config

HOURS = 24 * 365


def _raw_outputs(model, meta, candles, end_idx):
    features = meta.normalisation.apply(feature_matrix(candles, meta.feature_spec))
    ds = WindowDataset(features, np.zeros(len(candles), np.int64), end_idx, window=meta.window_length())
    x, _ = ds[np.arange(len(ds))]
    with torch.no_grad():
        return model(x).double().numpy()


def test_threshold_is_chosen_on_validation_bars_and_test_bars_are_traded_at_it(tmp_path, rng):
    candles = synthetic_candles(2400, seed=int(rng.integers(2**31)))
    config = tiny_config(tmp_path / "run", folds=1, epochs=1)
    result = train(config, candles=candles)
    fold = result.folds[0]
    trading = fold["trading"]
    model, meta = load_checkpoint(fold["checkpoint"], fused=False)
    tau = trading["threshold"]
    assert meta.threshold == tau == trading["test"]["threshold"]
    tried = json.loads((tmp_path / "run" / "fold_0" / "threshold.json").read_text())
    assert tried["threshold"] == tau and tried["rule"] == trading["threshold_rule"]
    assert fold["ranges"]["val"][1] < fold["ranges"]["test"][0]  # the bars τ was chosen on precede the test

    # The same split the trainer made; τ re-chosen here from the validation windows alone must agree.
    data = prepare.prepare_data(
        candles, task="classification", window=config.window, stride=config.stride,
        feature_spec=config.feature_spec(), label_spec=config.label_spec(), max_windows=config.max_windows,
    )  # fmt: skip
    split = prepare.fold_end_bars(data, folds=1, window=config.window)[0]
    policy = DecisionPolicy.from_meta(meta, 0.5)
    # every bar of the validation range decides (as in the backtest), not only the --stride sampled ones
    val_bars = np.arange(split["val"].min(), split["val"].max() + 1)
    assert config.stride > 1 and len(val_bars) > len(split["val"])
    first, last, rows = per_bar(val_bars, _raw_outputs(model, meta, candles, val_bars))
    c = candles[first : last + 1]
    again = select_threshold(policy, rows, c.open, c.high, c.low, c.close, periods_per_year=HOURS)
    assert again.threshold == tau and list(again.n_trades) == tried["n_trades"]

    # The test record is the backtest of the test windows at τ, next to buy-and-hold on those bars.
    test_bars = np.arange(split["test"].min(), split["test"].max() + 1)
    first, last, rows = per_bar(test_bars, _raw_outputs(model, meta, candles, test_bars))
    c = candles[first : last + 1]
    signals, _, _ = DecisionPolicy("classification", 3, tau).batch(rows)
    m = run_backtest(c.open, c.high, c.low, c.close, signals).metrics(HOURS)
    record = trading["test"]
    assert record["n_trades"] == m.total_trades
    assert record["total_return"] == pytest.approx(m.total_return, rel=1e-9, abs=1e-12)
    assert record["hold_return"] == pytest.approx(c.close[-1] / c.close[0] - 1, rel=1e-12)
    assert "buy-and-hold" in result.verdict and "majority class" in result.verdict


def test_regression_threshold_lives_on_the_predicted_return_scale(tmp_path, rng):
    candles = synthetic_candles(2400, seed=int(rng.integers(2**31)))
    result = train(tiny_config(tmp_path / "run", folds=1, epochs=1, task="regression"), candles=candles)
    choice = json.loads((tmp_path / "run" / "fold_0" / "threshold.json").read_text())
    _, meta = load_checkpoint(result.folds[0]["checkpoint"], fused=False)
    assert meta.threshold == choice["threshold"] in choice["grid"]
    assert 0.0 <= choice["threshold"] < 0.05  # a return (hourly bars), never a probability like 0.5
    assert max(choice["n_trades"]) > 0
    assert "train-mean sign" in result.verdict


def test_trading_table_lists_each_folds_tau_and_its_test_trading():
    from convnext_fast.train.summary import trading_table

    traded = {
        "fold": 0,
        "ranges": {"test": ["2024-01-01T00:00:00.000", "2024-02-01T00:00:00.000"]},
        "trading": {
            "threshold": 0.42,
            "test": {"n_trades": 31, "total_return": 0.0123, "hold_return": -0.05},
        },
    }
    table = trading_table([traded, {"fold": 1, "ranges": traded["ranges"]}])
    assert "| fold 0 (2024-01-01..2024-02-01) | 0.42 | 31 | +1.23% | -5.00% |" in table
    assert "fold 1" not in table  # a fold without trading (a universe) is not invented
    assert trading_table([{"fold": 1}]) == ""
