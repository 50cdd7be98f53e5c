"""Funding end to end: fetched from the (fake) exchange into the store, mapped onto bars, charged by the
backtest by default for perpetuals (``--no-funding`` turns it off) and by the live paper broker alike;
Kelly sizing through the backtest command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnext_fast.data.bybit import BybitClient
from convnext_fast.data.funding import (
    FundingRates,
    fetch_funding,
    find_funding,
    load_funding,
    save_funding,
    synthetic_funding,
)
from convnext_fast.live.exchange import Credentials

from .fake_exchange import FakeExchange
from .support import FundingHistory

H = 3_600_000


def test_a_settlement_is_charged_at_the_close_of_the_bar_it_ends():
    starts = np.arange(10, dtype=np.int64) * H
    rates = FundingRates(np.array([8 * H, 2 * H + 1, 100 * H, 0]), np.array([1e-4, -2e-4, 5e-4, 3e-4]))
    got = rates.per_bar(starts, H)
    want = np.zeros(10)
    want[7] = 1e-4  # the 08:00 settlement: the close of the 07:00 bar
    want[2] = -2e-4  # inside bar 2 → charged at its close
    np.testing.assert_array_equal(got, want)  # 0 (before the first bar's close) and 100 h: outside


def test_fetch_pages_backwards_and_stores_beside_the_candles(rng, tmp_path):
    times = np.arange(1, 451) * 8 * H + 1_600_000_000_000 // (8 * H) * 8 * H
    rates = rng.normal(1e-4, 1e-4, len(times))
    creds = Credentials("k" * 18, "s" * 36)
    with FakeExchange(
        creds, funding=[(int(t), f"{r:.8f}") for t, r in zip(times, rates, strict=True)]
    ) as fake:
        client = BybitClient(fake.url, category="linear", progress=False, min_request_interval=0.0)
        got = fetch_funding(client, "BTCUSDT", int(times[5]), int(times[-3]))
        requests = fake.requests
    assert requests == 3, "451 settlements in pages of 200"
    np.testing.assert_array_equal(got.time_ms, times[5:-2])
    np.testing.assert_allclose(got.rate, np.round(rates[5:-2], 8))
    path = save_funding(tmp_path, got, "BTCUSDT")
    assert path.name == "funding.parquet" and path.parent.name == "BTCUSDT"
    again = load_funding(path)
    np.testing.assert_array_equal(again.time_ms, got.time_ms)
    assert find_funding(tmp_path, "BTCUSDT").rate.tolist() == got.rate.tolist()
    assert find_funding(tmp_path, "ETHUSDT") is None


def _store_with_funding(tmp_path, candles):
    from convnext_fast.data.store import CandleStore

    CandleStore(tmp_path / "store").write(candles, "BTCUSDT", "60")
    rates = synthetic_funding(int(candles.start_ms[0]), int(candles.start_ms[-1]), seed=3)
    save_funding(tmp_path / "store", rates, "BTCUSDT")
    return tmp_path / "store", rates


def test_backtest_charges_funding_by_default_and_kelly_sizes(rng, tmp_path, capsys):
    from convnext_fast.cli import main
    from convnext_fast.data.synthetic import synthetic_candles

    candles = synthetic_candles(600, seed=int(rng.integers(1000)))
    store, _ = _store_with_funding(tmp_path, candles)
    probs = rng.dirichlet([2.0, 2.0, 1.0], len(candles))
    np.save(tmp_path / "p.npy", probs)
    base = ["backtest", "--data", str(store), "--probs", str(tmp_path / "p.npy"), "--threshold", "0.4"]
    runs = {}
    for name, extra in {
        "funding": [],
        "none": ["--no-funding"],
        "kelly": ["--sizing", "kelly", "--stop-loss", "0.02", "--take-profit", "0.04"],
    }.items():
        assert main([*base, *extra, "--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    out = capsys.readouterr().out
    assert "settlements applied" in out and "sizing kelly" in out
    assert runs["none"]["funding_paid"] == 0 and runs["funding"]["funding_paid"] != 0
    assert runs["kelly"]["funding_paid"] != 0
    trades = np.genfromtxt(tmp_path / "kelly" / "trades.csv", delimiter=",", names=True)
    fixed = np.genfromtxt(tmp_path / "funding" / "trades.csv", delimiter=",", names=True)
    # Kelly entries use a fraction of equity: their notionals are well below the fixed size's.
    assert np.median(trades["qty"] * trades["entry_price"]) < 0.6 * np.median(
        fixed["qty"] * fixed["entry_price"]
    )


def test_live_replay_pays_the_backtests_funding_and_sizes_alike(rng, tmp_path):
    """The live command's wiring (``attach_sizing_and_funding``) makes the paper broker charge the same
    funding per bar, and size vol-target entries the same, as the backtest engine."""
    import argparse
    from types import SimpleNamespace

    from convnext_fast.data.synthetic import synthetic_candles
    from convnext_fast.live.order_cli import add_sizing_and_funding_arguments, attach_sizing_and_funding
    from convnext_fast.trading.backtest import BacktestConfig, run_backtest
    from convnext_fast.trading.broker import PaperBroker
    from convnext_fast.trading.sizing import SizingRule

    candles = synthetic_candles(500, seed=int(rng.integers(1000)))
    store, rates = _store_with_funding(tmp_path, candles)
    per_bar = rates.per_bar(candles.start_ms, H)
    assert (per_bar != 0).sum() >= 50
    history, c = candles[:100], candles[100:]
    signal = rng.choice([-1, 0, 1], len(c))
    parser = argparse.ArgumentParser()
    add_sizing_and_funding_arguments(parser)
    args = parser.parse_args(["--sizing", "vol-target", "--vol-window", "48", "--target-vol", "0.4"])
    args.__dict__.update(size=2.0, interval="60", category="linear", symbol="BTCUSDT", data=str(store))
    config = BacktestConfig()
    engine = SimpleNamespace(broker=PaperBroker(config), sizer=None, funding=None)
    rules = attach_sizing_and_funding(args, engine, config, history, synthetic=False)
    assert rules == f"sizing vol-target, funding store beside {store}"
    live_sizes = []
    for t in range(len(c)):  # what LiveEngine.step does per closed candle with its two hooks
        engine.sizer.observe(c.close[t])
        live_sizes.append(engine.sizer.size(int(signal[t]), None))
        funding = engine.funding.rate_for_bar(int(c.start_ms[t]))
        engine.broker.on_bar(
            c.open[t], c.high[t], c.low[t], c.close[t], int(signal[t]), live_sizes[-1], funding
        )
    rule = SizingRule("vol-target", size=2.0, vol_window=48, target_vol=0.4)
    sizes = rule.sizes(np.r_[np.zeros(100), signal], None, candles.close)[100:]
    np.testing.assert_allclose(live_sizes, sizes, rtol=1e-9)
    batch = run_backtest(c.open, c.high, c.low, c.close, signal, sizes, config, funding=per_bar[100:])
    assert batch.funding_paid != 0
    engine.broker.close_position(float(c.close[-1]))  # the backtest's forced close at the end of data
    assert engine.broker.equity == pytest.approx(batch.equity[-1], rel=1e-12)


def test_live_funding_schedule_asks_ahead_once_and_backs_off_after_a_failure():
    from convnext_fast.data.funding import FundingSchedule

    history = FundingHistory({8 * H: 1e-4, 16 * H: -3e-4, 24 * H: 2e-4}, now=6 * H, fail_on=[2])
    asked = history.asked
    schedule = FundingSchedule(None, H, history, known_until_ms=5 * H, clock_ms=history.clock_ms)
    ahead = FundingSchedule.LOOKAHEAD_MS
    assert schedule.rate_for_bar(5 * H) == 0.0 and asked == [(5 * H + 1, 6 * H + ahead)]
    history.now = 17 * H  # a backlog: bars 6..16 H closed while the loop was away
    assert schedule.rate_for_bar(6 * H) == 0.0 and len(asked) == 2  # failed: logged, charged what is known
    assert schedule.rate_for_bar(7 * H) == 0.0 and len(asked) == 2  # within the pause: not asked again
    history.now += 1000  # the 1 s pause is over
    assert schedule.rate_for_bar(7 * H) == 1e-4 and asked[-1] == (5 * H + 1, 8 * H + ahead)
    rates = [schedule.rate_for_bar(b * H) for b in range(8, 16)]
    assert rates == [0.0] * 7 + [-3e-4] and len(asked) == 3  # the backlog up to 16 H: one request in all
    assert schedule.rate_for_bar(16 * H) == 0.0 and len(asked) == 4  # past the newest settlement: asks again
    history.now = 25 * H
    assert schedule.rate_for_bar(23 * H) == 2e-4 and asked[-1] == (16 * H + 1, 24 * H + ahead)


def test_a_settlement_published_after_its_bar_is_paid_with_the_next_bar(rng):
    """The loop sees a bar a few seconds after it closes; a settlement at that close which the exchange
    lists only later is paid once, one bar late, never dropped; a resume in between changes nothing."""
    from convnext_fast.data.funding import FundingSchedule

    t0, history = FundingHistory.eight_hourly(rng, 11, listed_after_ms=30_000)  # listed 30 s after settling
    table = history.table

    def schedule(known_until_ms):
        return FundingSchedule(None, H, history, known_until_ms=known_until_ms, clock_ms=history.clock_ms)

    bars = t0 + np.arange(80) * H
    paid = history.charge(schedule(t0), bars, seen_after_ms=5_000)
    settled = [t for t in table if bars[0] < t <= bars[-1]]  # the last bar's own settlement is not yet listed
    assert sum(p != 0 for p in paid) == len(settled) >= 8
    for t in settled:  # the bar ending at t is the bar starting at t - H; paid with the next one
        assert paid[int((t - bars[0]) // H)] == table[t]
    first = schedule(t0)
    again = history.charge(
        first, bars[:40], seen_after_ms=5_000
    )  # bar 39 closes on a settlement it cannot pay yet
    resumed = schedule(0)
    resumed.set_state(first.state())
    assert again + history.charge(resumed, bars[40:], seen_after_ms=5_000) == paid


def test_fetch_funding_covers_the_stored_candles(rng, tmp_path):
    """``fetch --funding`` without --start: the range of the candles already in the store."""
    from convnext_fast.data.funding import update_store_funding
    from convnext_fast.data.store import CandleStore
    from convnext_fast.data.synthetic import synthetic_candles

    candles = synthetic_candles(200, seed=int(rng.integers(1000)))
    CandleStore(tmp_path).write(candles, "BTCUSDT", "60")
    first, last = int(candles.start_ms[0]), int(candles.start_ms[-1])
    times = np.arange(first - 40 * H, last + 40 * H, 8 * H)
    creds = Credentials("k" * 18, "s" * 36)
    with FakeExchange(creds, funding=[(int(t), "0.0001") for t in times]) as fake:
        client = BybitClient(fake.url, category="linear", progress=False, min_request_interval=0.0)
        line = update_store_funding(client, tmp_path, "BTCUSDT", None, last)
    stored = find_funding(tmp_path, "BTCUSDT")
    assert "funding.parquet" in line
    np.testing.assert_array_equal(stored.time_ms, times[(times >= first) & (times <= last)])
