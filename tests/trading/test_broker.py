"""PaperBroker, bar at a time, makes exactly the backtest's decisions and fills, also across a save/resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnext_fast.trading.backtest import TRADE_DTYPE, BacktestConfig, run_backtest
from convnext_fast.trading.broker import PaperBroker
from tests.trading.market import random_bars, random_funding, random_signals


def replay(broker: PaperBroker, o, h, lo, c, signal, size, funding, bars: range):
    equity, position, trades = [], [], []
    for t in bars:
        trades.append(broker.on_bar(o[t], h[t], lo[t], c[t], int(signal[t]), float(size[t]), funding[t]))
        equity.append(broker.equity)
        position.append(broker.position)
    return equity, position, trades


@pytest.mark.parametrize("resume_at", [None, 0.37])
def test_broker_matches_backtest_bar_by_bar(resume_at, rng):
    n = 1500
    o, h, lo, c = random_bars(rng, n)
    signal, size, funding = random_signals(rng, n), rng.uniform(0.1, 6.0, n), random_funding(rng, n)
    cfg = BacktestConfig(
        taker_fee_bps=6.0,
        slippage_bps=2.0,
        stop_loss=0.07,
        take_profit=0.05,
        leverage=5.0,
        maintenance_margin=0.15,
    )
    batch = run_backtest(o, h, lo, c, signal, size, cfg, funding=funding)

    broker = PaperBroker(cfg, cfg.initial_equity)
    split = n if resume_at is None else int(n * resume_at)
    equity, position, trades = replay(broker, o, h, lo, c, signal, size, funding, range(split))
    if resume_at is not None:  # a restart in the middle: state through JSON, then carry on
        broker = PaperBroker.from_state(json.loads(json.dumps(broker.state())))
        more = replay(broker, o, h, lo, c, signal, size, funding, range(split, n))
        equity, position, trades = equity + more[0], position + more[1], trades + more[2]
    trades.append(broker.close_position(c[-1]))
    equity[-1], position[-1] = broker.equity, broker.position

    np.testing.assert_array_equal(equity, batch.equity)
    np.testing.assert_array_equal(position, batch.position)
    live_trades = np.concatenate(trades)
    assert live_trades.dtype == TRADE_DTYPE and len(live_trades) == len(batch.trades) > 20
    assert {0, 1, 2, 4} <= set(batch.trades["exit_reason"].tolist())  # signal, stop, take-profit, liquidation
    for name in (
        "entry_bar",
        "exit_bar",
        "side",
        "qty",
        "entry_price",
        "exit_price",
        "fees",
        "pnl",
        "exit_reason",
    ):
        np.testing.assert_array_equal(live_trades[name], batch.trades[name], err_msg=name)


def test_broker_executes_at_the_next_open_only():
    broker = PaperBroker(BacktestConfig(taker_fee_bps=0.0), 1000.0)
    assert len(broker.on_bar(100, 101, 99, 100, 1, 1.0)) == 0
    assert broker.position == 0.0 and broker.pending_signal == 1  # decided at the close, not yet filled
    broker.on_bar(104, 106, 103, 105, 1, 1.0)
    assert broker.position == pytest.approx(1000.0 / 104)
    assert broker.equity == pytest.approx(1000.0 / 104 * 105)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda b: b.on_bar(100, 101, 99, np.nan, 1, 1.0), "close has NaN"),
        (lambda b: b.on_bar(100, 99, 101, 100, 1, 1.0), "inconsistent bar"),
        (lambda b: b.on_bar(100, 101, 99, 100, 3, 1.0), "signal must be"),
        (lambda b: b.on_bar(100, 101, 99, 100, 1, -2.0), "size must be"),
        (lambda b: b.close_position(100.0), "at least one processed bar"),
        (lambda b: PaperBroker.from_state({"version": 99}), "state must be"),
        (lambda b: PaperBroker(BacktestConfig(), equity=-5.0), "equity must be"),
    ],
)
def test_broker_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(PaperBroker())
