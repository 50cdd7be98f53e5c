"""Metrics against quantstats on the same returns, and per-trade metrics by hand."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from convnext_fast.trading.backtest import TRADE_DTYPE, BacktestConfig, run_backtest
from convnext_fast.trading.metrics import compute_metrics, longest_underwater
from tests.trading.market import random_bars, random_signals

pd = pytest.importorskip("pandas")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    qs = pytest.importorskip("quantstats")

HOURLY = 24 * 365


def test_matches_quantstats_on_backtest_returns(rng):
    n = 3000
    o, h, lo, c = random_bars(rng, n, vol=0.005)
    res = run_backtest(o, h, lo, c, random_signals(rng, n), 1.0, BacktestConfig(stop_loss=0.02))
    m = compute_metrics(res.equity, res.trades, HOURLY)
    returns = pd.Series(res.returns, index=pd.date_range("2024-01-01 01:00", periods=n - 1, freq="h"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = {
            "sharpe": qs.stats.sharpe(returns, periods=HOURLY),
            "sortino": qs.stats.sortino(returns, periods=HOURLY),
            "cagr": qs.stats.cagr(returns, periods=HOURLY),
            "volatility": qs.stats.volatility(returns, periods=HOURLY),
            "max_drawdown": qs.stats.max_drawdown(returns),
            "calmar": qs.stats.calmar(returns, periods=HOURLY),
            "total_return": qs.stats.comp(returns),
        }
    for name, value in expected.items():
        assert getattr(m, name) == pytest.approx(value, rel=1e-9), name
    assert m.max_drawdown < 0 and m.sharpe != 0


def trades_with(pnl, bars_held, fees, qty=1.0, price=100.0):
    trades = np.zeros(len(pnl), dtype=TRADE_DTYPE)
    trades["pnl"], trades["bars_held"], trades["fees"] = pnl, bars_held, fees
    trades["qty"], trades["entry_price"], trades["exit_price"] = qty, price, price
    return trades


def test_trade_metrics_by_hand():
    equity = np.array([100.0, 110.0, 99.0, 104.5, 120.0, 120.0])
    trades = trades_with([10.0, -11.0, 5.5, 15.5], [1, 1, 1, 2], [0.1, 0.2, 0.3, 0.4])
    m = compute_metrics(equity, trades, 252)
    assert m.total_trades == 4
    assert m.win_rate == pytest.approx(0.75)
    assert m.profit_factor == pytest.approx(31.0 / 11.0)
    assert m.avg_trade_bars == pytest.approx(1.25)
    assert m.exposure == pytest.approx(5 / 6)
    assert m.fees_paid == pytest.approx(1.0)
    assert m.turnover == pytest.approx(4 * 200.0 / equity.mean())
    assert m.max_drawdown == pytest.approx(99.0 / 110.0 - 1.0)
    assert m.max_drawdown_duration_bars == 2  # bars 2 and 3 are below the peak of bar 1
    assert m.total_return == pytest.approx(0.2)


def test_exposure_equals_share_of_bars_holding_a_position(rng):
    o, h, lo, c = random_bars(rng, 800)
    res = run_backtest(o, h, lo, c, random_signals(rng, 800), 1.0, BacktestConfig(take_profit=0.01))
    m = compute_metrics(res.equity, res.trades, HOURLY)
    assert m.exposure == pytest.approx(np.mean(res.position != 0), abs=1e-12)
    assert 0 < m.exposure < 1


def test_longest_underwater():
    assert longest_underwater(np.array([1.0, 2.0, 1.5, 1.8, 2.0, 1.0, 3.0, 2.9])) == 2
    assert longest_underwater(np.array([1.0, 0.5, 0.6, 0.7])) == 3  # never recovers
    assert longest_underwater(np.array([1.0, 1.1, 1.2])) == 0


def test_no_trades_gives_nan_trade_stats():
    m = compute_metrics(np.full(10, 5.0), np.zeros(0, dtype=TRADE_DTYPE), HOURLY)
    assert m.total_trades == 0 and np.isnan(m.win_rate) and np.isnan(m.profit_factor)
    assert m.total_return == 0.0 and m.max_drawdown == 0.0 and np.isnan(m.sharpe)


@pytest.mark.parametrize(
    ("equity", "ppy", "message"),
    [
        (np.array([1.0]), 252, "at least 2"),
        (np.array([1.0, np.nan]), 252, "equity has NaN"),
        (np.array([1.0, -1.0]), 252, "equity must stay > 0"),
        (np.array([1.0, 2.0]), 0, "periods_per_year"),
    ],
)
def test_bad_inputs(equity, ppy, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(equity, np.zeros(0, dtype=TRADE_DTYPE), ppy)
