"""The numba backtest against an independent pure-Python simulator, hand-computed scenarios, causality and
input errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from convnext_fast.trading._checks import TradingInputError
from convnext_fast.trading.backtest import BacktestConfig, run_backtest, sweep_thresholds
from convnext_fast.trading.metrics import compute_metrics
from convnext_fast.trading.signals import signals_from_probs
from tests.trading.market import random_bars, random_funding, random_signals

REASON = {"signal": 0, "stop_loss": 1, "take_profit": 2, "end_of_data": 3, "liquidation": 4}


@dataclass
class OpenTrade:
    side: int
    qty: float
    entry_price: float
    entry_bar: int
    entry_fee: float
    stop: float | None
    take: float | None
    funding: float = 0.0


def slow_backtest(o, h, lo, c, signal, size, funding, cfg: BacktestConfig):
    """A straightforward re-statement of the documented rules, bar by bar, with plain Python objects."""
    taker, maker, slip = cfg.taker_fee_bps / 1e4, cfg.maker_fee_bps / 1e4, cfg.slippage_bps / 1e4
    # Signal orders and take-profits: taker + slippage as market orders, maker and none as limit orders.
    sig_fee, sig_slip = (taker, slip) if cfg.order_type == "market" else (maker, 0.0)
    tp_fee, tp_slip = (taker, slip) if cfg.take_profit_order == "market" else (maker, 0.0)
    cash, pos = cfg.initial_equity, None
    equity, position, trades = [], [], []

    def exit_at(t, price, fee_rate, reason):
        nonlocal cash, pos
        fee = pos.qty * price * fee_rate
        cash += pos.side * pos.qty * price - fee
        pnl = pos.side * pos.qty * (price - pos.entry_price) - pos.entry_fee - fee - pos.funding
        trades.append(
            (
                pos.entry_bar,
                t,
                pos.side,
                pos.qty,
                pos.entry_price,
                price,
                pos.entry_fee,
                fee,
                pos.funding,
                pnl,
                reason,
            )
        )
        pos = None

    for t in range(len(c)):
        if t > 0:
            want, fraction = int(signal[t - 1]), float(size[t - 1])
            if pos is not None and (want == -pos.side or (want == 0 and cfg.close_on_hold)):
                exit_at(t, o[t] * (1 - pos.side * sig_slip), sig_fee, REASON["signal"])
            if pos is None and want != 0 and fraction > 0 and cash > 0:
                price = o[t] * (1 + want * sig_slip)
                qty = min(fraction, cfg.leverage) * cash / price
                fee = qty * price * sig_fee
                cash -= want * qty * price + fee
                stop = price * (1 - want * cfg.stop_loss) if cfg.stop_loss else None
                take = price * (1 + want * cfg.take_profit) if cfg.take_profit else None
                pos = OpenTrade(want, qty, price, t, fee, stop, take)
        if pos is not None:
            stop, stop_reason = pos.stop, REASON["stop_loss"]
            if cfg.maintenance_margin:
                # Liquidated where equity cash + side·qty·p would equal maintenance_margin·qty·p.
                mm = cfg.maintenance_margin
                liq = -cash / (pos.qty * (1 - mm)) if pos.side == 1 else cash / (pos.qty * (1 + mm))
                if stop is None or (liq > stop if pos.side == 1 else liq < stop):
                    stop, stop_reason = liq, REASON["liquidation"]
            if pos.side == 1:
                stop_hit = stop is not None and lo[t] <= stop
                take_hit = pos.take is not None and h[t] >= pos.take
            else:
                stop_hit = stop is not None and h[t] >= stop
                take_hit = pos.take is not None and lo[t] <= pos.take
            if stop_hit:  # the worse outcome when both levels are inside the bar
                worst = min(stop, o[t]) if pos.side == 1 else max(stop, o[t])
                exit_at(t, worst * (1 - pos.side * slip), taker, stop_reason)
            elif take_hit:
                best = max(pos.take, o[t]) if pos.side == 1 else min(pos.take, o[t])
                exit_at(t, best * (1 - pos.side * tp_slip), tp_fee, REASON["take_profit"])
        if pos is not None and funding[t] != 0:
            paid = pos.side * pos.qty * c[t] * funding[t]
            cash -= paid
            pos.funding += paid
        if t == len(c) - 1 and pos is not None:
            exit_at(t, c[t] * (1 - pos.side * slip), taker, REASON["end_of_data"])
        equity.append(cash + (pos.side * pos.qty * c[t] if pos else 0.0))
        position.append(pos.side * pos.qty if pos else 0.0)
    return np.array(equity), np.array(position), trades


CONFIGS = {
    "stops": BacktestConfig(taker_fee_bps=5.5, slippage_bps=3.0, stop_loss=0.015, take_profit=0.03),
    "leverage-hold-closes": BacktestConfig(
        taker_fee_bps=7.5, slippage_bps=1.0, stop_loss=0.01, leverage=2.5, close_on_hold=True
    ),
    "tp-only": BacktestConfig(taker_fee_bps=0.0, maker_fee_bps=0.0, take_profit=0.02, leverage=0.7),
    "limit-orders": BacktestConfig(
        slippage_bps=4.0, stop_loss=0.02, take_profit=0.02, order_type="limit", take_profit_order="limit"
    ),
    "limit-entries-market-tp": BacktestConfig(slippage_bps=4.0, take_profit=0.015, order_type="limit"),
    "tiny-stops": BacktestConfig(slippage_bps=20.0, stop_loss=0.001, take_profit=0.001, close_on_hold=True),
    # 5x with a large maintenance margin: liquidated ~6 % against entry, keeping ~70 % of equity.
    "liquidation": BacktestConfig(slippage_bps=2.0, leverage=5.0, maintenance_margin=0.15, take_profit=0.05),
    "liquidation-and-stops": BacktestConfig(leverage=5.0, maintenance_margin=0.15, stop_loss=0.07),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_engine_matches_slow_python(name, rng):
    cfg = CONFIGS[name]
    n = 3000
    o, h, lo, c = random_bars(rng, n)
    signal = random_signals(rng, n)
    size = rng.uniform(0.0, 3.0 if cfg.maintenance_margin is None else 6.0, n)
    funding = random_funding(rng, n)
    result = run_backtest(o, h, lo, c, signal, size, cfg, funding=funding)
    equity, position, trades = slow_backtest(o, h, lo, c, signal, size, funding, cfg)

    assert len(trades) > 50, "the random market should produce many trades"
    np.testing.assert_allclose(result.equity, equity, rtol=1e-9, atol=0)
    np.testing.assert_allclose(result.position, position, rtol=1e-9, atol=1e-12)
    got = result.trades
    fields = ["entry_bar", "exit_bar", "side", "qty", "entry_price", "exit_price", "entry_fee", "exit_fee"]
    fields += ["funding", "pnl", "exit_reason"]
    assert len(got) == len(trades)
    for k, name in enumerate(fields):
        np.testing.assert_allclose(got[name], [tr[k] for tr in trades], rtol=1e-9, atol=1e-9, err_msg=name)
    if cfg.slippage_bps * 1e-4 < (cfg.stop_loss or 1):  # else every entry is stopped at once, by design
        assert len(set(got["exit_reason"].tolist())) >= 2, "several exit paths should be exercised"
    np.testing.assert_allclose(result.equity[-1] - cfg.initial_equity, got["pnl"].sum(), rtol=1e-9, atol=1e-6)
    if cfg.maintenance_margin:
        assert (got["exit_reason"] == REASON["liquidation"]).sum() >= 3


def bars(rows):
    """Hand-written bars: rows of (open, high, low, close)."""
    o, h, lo, c = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    return o, h, lo, c


def test_single_long_round_trip():
    o, h, lo, c = bars(
        [(100, 101, 99, 100), (101, 106, 100, 105), (110, 112, 108, 111), (120, 121, 118, 119)]
    )
    cfg = BacktestConfig(initial_equity=1000.0, taker_fee_bps=10.0, close_on_hold=True)
    res = run_backtest(o, h, lo, c, [1, 1, 0, 0], 1.0, cfg)
    qty = 1000.0 / 101.0  # bought at bar 1's open with all equity
    entry_fee, exit_fee = 1000.0 * 0.001, qty * 120.0 * 0.001  # sold at bar 3's open
    pnl = qty * (120.0 - 101.0) - entry_fee - exit_fee
    (trade,) = res.trades
    assert (trade["entry_bar"], trade["exit_bar"], trade["side"], trade["bars_held"]) == (1, 3, 1, 2)
    assert trade["entry_price"] == 101.0 and trade["exit_price"] == 120.0
    assert trade["pnl"] == pytest.approx(pnl, rel=1e-12)
    assert trade["fees"] == pytest.approx(entry_fee + exit_fee, rel=1e-12)
    expected = [
        1000.0,
        1000.0 - entry_fee + qty * (105 - 101),
        1000.0 - entry_fee + qty * (111 - 101),
        1000 + pnl,
    ]
    np.testing.assert_allclose(res.equity, expected, rtol=1e-12)
    np.testing.assert_allclose(res.position, [0.0, qty, qty, 0.0], rtol=1e-12)


def test_short_round_trip_with_slippage():
    o, h, lo, c = bars([(50, 51, 49, 50), (50, 50.5, 47, 48), (45, 46, 44, 45), (44, 45, 43, 44)])
    cfg = BacktestConfig(initial_equity=2000.0, taker_fee_bps=5.0, slippage_bps=10.0)
    res = run_backtest(o, h, lo, c, [-1, 1, 0, 0], 0.5, cfg)
    entry = 50.0 * (1 - 0.001)  # a sell fills below the open
    exit_ = 45.0 * (1 + 0.001)  # the buy-back above it
    qty = 0.5 * 2000.0 / entry
    pnl = qty * (entry - exit_) - qty * entry * 5e-4 - qty * exit_ * 5e-4
    first = res.trades[0]
    assert (first["side"], first["entry_bar"], first["exit_bar"]) == (-1, 1, 2)
    assert first["entry_price"] == pytest.approx(entry) and first["exit_price"] == pytest.approx(exit_)
    assert first["pnl"] == pytest.approx(pnl, rel=1e-12)
    # The Long signal of bar 1 flips into a long at bar 2's open, force-closed at the last close.
    second = res.trades[1]
    assert (second["side"], second["entry_bar"], second["exit_bar"]) == (1, 2, 3)
    assert second["entry_price"] == pytest.approx(45.0 * (1 + 0.001))
    assert second["exit_reason"] == REASON["end_of_data"]
    assert res.equity[-1] == pytest.approx(2000.0 + res.trades["pnl"].sum(), rel=1e-12)


def test_stop_hit_intrabar_fills_at_the_stop():
    o, h, lo, c = bars([(100, 100, 100, 100), (100, 101, 99, 100), (99, 100, 94, 96), (96, 97, 95, 96)])
    cfg = BacktestConfig(initial_equity=1000.0, taker_fee_bps=0.0, stop_loss=0.05)
    res = run_backtest(o, h, lo, c, [1, 1, 1, 0], 1.0, cfg)
    (trade,) = res.trades[:1]
    assert trade["exit_reason"] == REASON["stop_loss"] and trade["exit_bar"] == 2
    assert trade["exit_price"] == pytest.approx(95.0)
    assert trade["pnl"] == pytest.approx(10.0 * (95.0 - 100.0))
    # The Long signal still stands, so bar 3 re-enters at its open, force-closed at its close.
    assert res.trades[1]["entry_bar"] == 3 and res.trades[1]["entry_price"] == 96.0


def test_stop_and_take_profit_in_one_bar_assumes_the_stop():
    o, h, lo, c = bars([(100, 100, 100, 100), (100, 100, 100, 100), (100, 112, 90, 101)])
    cfg = BacktestConfig(initial_equity=1000.0, taker_fee_bps=0.0, stop_loss=0.05, take_profit=0.1)
    res = run_backtest(o, h, lo, c, [-1, 0, 0], 1.0, cfg)
    trade = res.trades[0]
    assert trade["exit_reason"] == REASON["stop_loss"]
    assert trade["exit_price"] == pytest.approx(105.0)  # the short's stop, not its take-profit at 90
    assert res.equity[-1] == pytest.approx(1000.0 - 10.0 * 5.0)


def test_take_profit_pays_what_live_pays_taker_by_default_maker_as_a_limit():
    o, h, lo, c = bars([(100, 100, 100, 100), (100, 101, 99, 100), (101, 111, 100, 108)])
    # Live attaches the take-profit as a market trigger: taker fee and slippage, like a stop.
    cfg = BacktestConfig(initial_equity=1000.0, taker_fee_bps=10.0, maker_fee_bps=2.0, slippage_bps=5.0,
                         take_profit=0.1)  # fmt: skip
    trade = run_backtest(o, h, lo, c, [1, 0, 0], 1.0, cfg).trades[0]
    entry = 100.0 * (1 + 5e-4)
    qty = 1000.0 / entry  # the entry fee is paid from cash, not from the size
    exit_ = entry * 1.1 * (1 - 5e-4)
    assert trade["exit_reason"] == REASON["take_profit"] and trade["exit_price"] == pytest.approx(exit_)
    assert trade["exit_fee"] == pytest.approx(qty * exit_ * 10e-4)
    limit = BacktestConfig(**{**cfg.to_dict(), "take_profit_order": "limit", "slippage_bps": 0.0})
    trade = run_backtest(o, h, lo, c, [1, 0, 0], 1.0, limit).trades[0]
    assert trade["exit_price"] == pytest.approx(110.0)
    assert trade["exit_fee"] == pytest.approx(10.0 * 110.0 * 2e-4)
    assert trade["pnl"] == pytest.approx(10.0 * 10.0 - 1.0 - 0.22)
    with pytest.raises(TradingInputError, match="order_type"):
        BacktestConfig(order_type="stop")


def test_gap_through_the_stop_fills_at_the_open():
    o, h, lo, c = bars([(100, 100, 100, 100), (100, 102, 99, 101), (90, 91, 88, 89), (89, 90, 88, 89)])
    cfg = BacktestConfig(initial_equity=1000.0, taker_fee_bps=0.0, stop_loss=0.05)
    res = run_backtest(o, h, lo, c, [1, 0, 0, 0], 1.0, cfg)
    trade = res.trades[0]
    assert trade["exit_reason"] == REASON["stop_loss"] and trade["exit_price"] == 90.0  # not the stop at 95
    assert res.equity[2] == pytest.approx(900.0) and res.equity[-1] == pytest.approx(900.0)


def test_funding_is_paid_by_longs_on_positive_rate():
    o, h, lo, c = bars(
        [(100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 100, 100)]
    )
    cfg = BacktestConfig(initial_equity=1000.0, taker_fee_bps=0.0)
    res = run_backtest(o, h, lo, c, [1, 0, 0, 0], 1.0, cfg, funding=[0, 0.001, -0.0005, 0.002])
    assert res.trades[0]["funding"] == pytest.approx(1000 * (0.001 - 0.0005 + 0.002))
    assert res.equity[-1] == pytest.approx(1000 - 2.5)


def test_leverage_caps_the_position_notional():
    o, h, lo, c = bars([(100, 100, 100, 100), (100, 100, 100, 100), (110, 110, 110, 110)])
    cfg = BacktestConfig(initial_equity=1000.0, taker_fee_bps=0.0, leverage=2.0)
    res = run_backtest(o, h, lo, c, [1, 0, 0], 5.0, cfg)
    assert res.trades[0]["qty"] == pytest.approx(20.0)  # 2 × equity, not 5 ×
    assert res.equity[-1] == pytest.approx(1200.0)


@pytest.mark.parametrize("source", ["zeros", "probs-below-threshold"])
def test_no_trades_leaves_equity_flat(source, rng):
    o, h, lo, c = random_bars(rng, 500)
    if source == "zeros":
        signal = np.zeros(500, dtype=np.int8)
    else:  # all-Hold: every probability at or below τ
        probs = rng.dirichlet([1, 1, 1], 500) * 0.6
        signal = signals_from_probs(probs, 0.6)
    res = run_backtest(o, h, lo, c, signal, 1.0, BacktestConfig(stop_loss=0.01))
    assert len(res.trades) == 0
    np.testing.assert_array_equal(res.equity, np.full(500, 10_000.0))
    assert not res.position.any()


def test_no_look_ahead(rng):
    n = 400
    o, h, lo, c = random_bars(rng, n)
    signal = random_signals(rng, n)
    cfg = BacktestConfig(slippage_bps=2.0, stop_loss=0.02)
    base = run_backtest(o, h, lo, c, signal, 1.0, cfg)
    for t in rng.choice(np.arange(1, n - 1), 10, replace=False):
        # Changing the signal at t or any price after t must leave every bar up to t untouched.
        flipped = signal.copy()
        flipped[t] = -flipped[t] if flipped[t] else 1
        o2, h2, lo2, c2 = (a.copy() for a in (o, h, lo, c))
        o2[t + 1 :] *= 1.3
        h2[t + 1 :] *= 1.3
        lo2[t + 1 :] *= 1.3
        c2[t + 1 :] *= 1.3
        for res in (
            run_backtest(o, h, lo, c, flipped, 1.0, cfg),
            run_backtest(o2, h2, lo2, c2, signal, 1.0, cfg),
        ):
            np.testing.assert_array_equal(res.equity[: t + 1], base.equity[: t + 1])
    trades = base.trades
    assert len(trades) > 5
    signal_entries = trades[trades["entry_bar"] > 0]
    assert (signal[signal_entries["entry_bar"] - 1] == signal_entries["side"]).all()
    np.testing.assert_allclose(
        signal_entries["entry_price"], o[signal_entries["entry_bar"]] * (1 + signal_entries["side"] * 2e-4)
    )
    assert (trades["entry_bar"] >= 1).all()  # nothing can fill at bar 0: no signal came before it


def test_forced_close_shows_in_trades_and_equity(rng):
    o, h, lo, c = random_bars(rng, 100)
    res = run_backtest(o, h, lo, c, np.ones(100, dtype=np.int8), 1.0, BacktestConfig(slippage_bps=1.0))
    last = res.trades[-1]
    assert last["exit_reason"] == REASON["end_of_data"] and last["exit_bar"] == 99
    assert last["exit_price"] == pytest.approx(c[-1] * (1 - 1e-4))
    assert res.position[-1] == 0.0 and res.position[-2] > 0
    assert res.equity[-1] == pytest.approx(10_000.0 + res.trades["pnl"].sum(), rel=1e-12)


@pytest.mark.slow
def test_sweep_matches_single_runs(rng):
    n = 2000
    o, h, lo, c = random_bars(rng, n)
    probs = rng.dirichlet([1, 1, 1], n)
    thresholds = np.array([0.34, 0.45, 0.55, 0.7])
    cfg = BacktestConfig(slippage_bps=1.0, stop_loss=0.02, take_profit=0.04)
    sweep = sweep_thresholds(o, h, lo, c, probs, thresholds, 0.8, cfg)
    for k, tau in enumerate(thresholds):
        res = run_backtest(o, h, lo, c, signals_from_probs(probs, tau), 0.8, cfg)
        m = compute_metrics(res.equity, res.trades, 24 * 365)
        assert sweep["n_trades"][k] == len(res.trades)
        assert sweep["final_equity"][k] == pytest.approx(res.equity[-1], rel=1e-12)
        assert sweep["sharpe"][k] == pytest.approx(m.sharpe, rel=1e-9)
        assert sweep["max_drawdown"][k] == pytest.approx(m.max_drawdown, rel=1e-12)


def good_inputs(rng, n=20):
    o, h, lo, c = random_bars(rng, n)
    return dict(open=o, high=h, low=lo, close=c, signal=random_signals(rng, n), size=1.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(close=a["close"][:-1]), "equal lengths"),
        (lambda a: a.update(signal=a["signal"][:-1]), "equal lengths"),
        (lambda a: a["open"].__setitem__(3, np.nan), "open has NaN"),
        (lambda a: a["low"].__setitem__(5, np.inf), "low has NaN/Inf"),
        (lambda a: a["close"].__setitem__(7, np.nan), "close has NaN"),
        (lambda a: a["high"].__setitem__(9, np.nan), "high has NaN"),
        (lambda a: a["close"].__setitem__(2, -1.0), "close must be > 0"),
        (lambda a: a["high"].__setitem__(4, a["low"][4] * 0.5), "inconsistent bar at index 4"),
        # the one OHLCV rule's ceiling: the backtest's fast numba pass agrees with it (it once let 2e9 through)
        (lambda a: a["high"].__setitem__(6, 2e9), "implausible high at index 6"),
        (lambda a: a.update(signal=np.full(20, 2)), "signal must contain only"),
        (lambda a: a.update(size=-0.5), "size must be >= 0"),
        (lambda a: a.update(size=np.full(20, np.nan)), "size has NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message, rng):
    args = good_inputs(rng)
    change(args)
    with pytest.raises(ValueError, match=message):
        run_backtest(**args)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("taker_fee_bps", -1.0),
        ("maker_fee_bps", -0.1),
        ("slippage_bps", np.nan),
        ("stop_loss", 1.5),
        ("leverage", 0),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BacktestConfig(**{field: value})


def test_sweep_rejects_threshold_outside_unit_interval(rng):
    args = good_inputs(rng)
    del args["signal"]
    with pytest.raises(ValueError, match="thresholds must be in"):
        sweep_thresholds(probs=rng.dirichlet([1, 1, 1], 20), thresholds=[0.5, 1.2], **args)
