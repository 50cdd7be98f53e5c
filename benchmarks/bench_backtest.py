"""Backtest speed: 1e6 bars with ~50k trades (target ≤ 50 ms after JIT), the engine loop alone, the live
broker's per-bar cost, and the parallel threshold sweep against the same backtests run one by one.

Run: ``pytest benchmarks/bench_backtest.py --benchmark-only``; results in benchmarks/results_trading.md.
"""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.trading import _engine
from convnext_fast.trading.backtest import BacktestConfig, run_backtest, sweep_thresholds
from convnext_fast.trading.broker import PaperBroker
from convnext_fast.trading.signals import signals_from_probs

N_BARS = 1_000_000
THRESHOLDS = np.linspace(0.40, 0.85, 16)
CONFIG = BacktestConfig(
    taker_fee_bps=5.5, maker_fee_bps=2.0, slippage_bps=1.0, stop_loss=0.02, take_profit=0.04
)


@pytest.fixture(scope="module")
def market():
    rng = np.random.default_rng(7)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, N_BARS)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high = np.maximum(open_, close) * (1.0 + rng.exponential(0.002, N_BARS))
    low = np.minimum(open_, close) * (1.0 - rng.exponential(0.002, N_BARS))
    # A new random side on ~8 % of bars, Hold otherwise (Hold keeps the position): ~50k trades.
    signal = np.where(rng.random(N_BARS) < 0.08, rng.choice([-1, 1], N_BARS), 0).astype(np.int8)
    probs = rng.dirichlet([1.0, 1.0, 6.0], N_BARS)
    return open_, high, low, close, signal, probs


def test_run_backtest_1m_bars(benchmark, market):
    o, h, lo, c, signal, _ = market
    run_backtest(o, h, lo, c, signal, 1.0, CONFIG)  # JIT
    benchmark.group = "backtest 1e6 bars"
    result = benchmark.pedantic(run_backtest, (o, h, lo, c, signal, 1.0, CONFIG), rounds=10, warmup_rounds=1)
    assert 40_000 < len(result.trades) < 60_000
    benchmark.extra_info["trades"] = len(result.trades)


def test_engine_loop_only_1m_bars(benchmark, market):
    o, h, lo, c, signal, _ = market
    sig, size, funding, params = signal.astype(np.float64), np.ones(N_BARS), np.zeros(N_BARS), CONFIG.params()

    def loop():
        return _engine.run_loop(
            _engine.new_state(CONFIG.initial_equity), params, o, h, lo, c, funding, sig, size
        )

    loop()
    benchmark.group = "backtest 1e6 bars"
    benchmark.pedantic(loop, rounds=10, warmup_rounds=1)


def test_paper_broker_per_bar(benchmark, market):
    o, h, lo, c, signal, _ = market
    n = 20_000

    def replay():
        broker = PaperBroker(CONFIG)
        for t in range(n):
            broker.on_bar(o[t], h[t], lo[t], c[t], int(signal[t]), 1.0)
        return broker

    benchmark.group = "paper broker 2e4 bars"
    benchmark.pedantic(replay, rounds=3, warmup_rounds=1)


def test_sweep_16_thresholds_parallel(benchmark, market):
    o, h, lo, c, _, probs = market
    benchmark.group = "16-threshold sweep, 1e6 bars"
    benchmark.pedantic(
        sweep_thresholds, (o, h, lo, c, probs, THRESHOLDS, 1.0, CONFIG), rounds=3, warmup_rounds=1
    )


def test_sweep_16_thresholds_one_by_one(benchmark, market):
    o, h, lo, c, _, probs = market

    def one_by_one():
        return [
            run_backtest(o, h, lo, c, signals_from_probs(probs, t), 1.0, CONFIG).equity[-1]
            for t in THRESHOLDS
        ]

    benchmark.group = "16-threshold sweep, 1e6 bars"
    benchmark.pedantic(one_by_one, rounds=3, warmup_rounds=1)
