"""The sizer and the funding schedule are engine hooks whose state rides in the committed snapshot: a run
interrupted and resumed through the store — with no history to re-seed the sizer, as a resume from the
exchange has — sizes (vol-target) and pays funding bit for bit as one uninterrupted run."""

from __future__ import annotations

import argparse
import types

import numpy as np
import pytest

from convnext_fast.data.funding import FundingSchedule
from convnext_fast.live.order_cli import add_sizing_and_funding_arguments, attach_sizing_and_funding
from convnext_fast.live.state import LiveStore
from convnext_fast.trading.backtest import BacktestConfig
from convnext_fast.trading.broker import PaperBroker

from .support import HISTORY, HOUR_MS, FundingHistory, make_engine, market, model_and_norm


def _args(funding_csv):
    parser = argparse.ArgumentParser()
    add_sizing_and_funding_arguments(parser)
    args = parser.parse_args(["--sizing", "vol-target", "--vol-window", "24", "--target-vol", "0.3",
                              "--funding", str(funding_csv)])  # fmt: skip
    extra = {"interval": "60", "category": "linear", "symbol": "BTCUSDT", "data": None, "size": 2.0}
    return types.SimpleNamespace(**vars(args), **extra)


def _broker():
    return PaperBroker(BacktestConfig(taker_fee_bps=5.5, slippage_bps=1.0))


def test_vol_target_sizing_and_funding_continue_bit_for_bit_across_a_resume(tmp_path, rng):
    n_stream, cut = 90, int(rng.integers(20, 70))
    candles = market(HISTORY + n_stream, rng)
    times = np.arange(candles.start_ms[0] // (8 * HOUR_MS) + 1, candles.start_ms[-1] // (8 * HOUR_MS) + 2)
    times = times * 8 * HOUR_MS
    rates = rng.normal(2e-4, 3e-4, len(times))
    csv = tmp_path / "funding.csv"
    csv.write_text(
        "time_ms,rate\n" + "".join(f"{t},{float(r)!r}\n" for t, r in zip(times, rates, strict=True))
    )
    args, config = _args(csv), BacktestConfig()
    model, norm = model_and_norm(rng)
    history, stream = candles[:HISTORY], candles[HISTORY:]

    whole = make_engine(model, norm, threshold=0.0, broker=_broker())
    whole.warm_up(history)
    attach_sizing_and_funding(args, whole, config, history, synthetic=False)
    want = [whole.step(c) for c in stream]

    first = make_engine(model, norm, threshold=0.0, broker=_broker())
    first.warm_up(history)
    attach_sizing_and_funding(args, first, config, history, synthetic=False)
    store = LiveStore(tmp_path / "s.db")
    store.start_new({"source": "test"})
    got = []
    for c in stream[:cut]:
        got.append(first.step(c))
        store.commit(got[-1], first.snapshot())
    saved = store.load()
    store.close()

    # The resumed process: broker and features from the store, the hooks attached with NO history (a
    # resume from the exchange streams on from the next candle), then their saved state.
    again = make_engine(model, norm, threshold=0.0, broker=PaperBroker.from_state(saved.broker))
    again.restore(saved.engine, saved.last_start_ms, saved.bars_processed)
    attach_sizing_and_funding(args, again, config, history[:0], synthetic=False)
    again.restore_hooks(saved.engine)
    got += [again.step(c) for c in stream[cut:]]

    sizes = [r["size"] for r in want]
    assert [r["size"] for r in got] == sizes and [r["equity"] for r in got] == [r["equity"] for r in want]
    after = sizes[cut:]
    assert len({s for s in after if s}) > 3, "vol-target sizes vary (not fixed, not warm-up zeros)"
    # Funding was charged: the same run without it ends elsewhere.
    plain = make_engine(model, norm, threshold=0.0, broker=_broker())
    plain.warm_up(history)
    attach_sizing_and_funding(args, plain, config, history, synthetic=False)
    plain.funding = None
    assert [plain.step(c) for c in stream][-1]["equity"] != want[-1]["equity"]


@pytest.mark.parametrize("behind_h", [0, 100], ids=["on-time", "catching-up"])
def test_a_resumed_live_funding_schedule_asks_only_for_new_settlements(rng, behind_h):
    """On time, each refresh reaches just past the bar; catching up on a backlog, one refresh reaches 100 h
    past it, so the saved state must carry the settlements the later bars are still to pay."""
    t0, history = FundingHistory.eight_hourly(rng, 19)
    seen_after = behind_h * HOUR_MS + 5000  # the live loop sees a bar a few seconds after it closed

    def schedule(known_until_ms):
        return FundingSchedule(
            None, HOUR_MS, history, known_until_ms=known_until_ms, clock_ms=history.clock_ms
        )

    bars = t0 + np.arange(60) * HOUR_MS
    want = history.charge(schedule(t0), bars, seen_after_ms=seen_after)
    first = schedule(t0)
    got = history.charge(first, bars[:30], seen_after_ms=seen_after)
    resumed = schedule(0)  # a resume has no history
    saved = first.state()
    resumed.set_state(saved)
    history.asked.clear()
    got += history.charge(resumed, bars[30:], seen_after_ms=seen_after)
    assert got == want and sum(r != 0 for r in want) >= 5
    # Only what settled after the newest settlement it knew: never the whole history again.
    asked = [start for start, _ in history.asked]
    assert not asked or min(asked) == saved["asked_until"] + 1 > t0 + 8 * HOUR_MS
    assert len(asked) <= 30 // (1 + behind_h) + 1  # catching up: one request covers 100 bars
