"""The live engine: replay parity with the batch path and the backtest, candle hygiene, gaps, shutdown and
resume."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal

import numpy as np
import pytest

from convnext_fast.data.candles import Candle, Candles
from convnext_fast.features.pipeline import StreamingFeatures
from convnext_fast.live.loop import LiveContext, OutputSink, run_live
from convnext_fast.live.sources import replay
from convnext_fast.live.state import LiveStore, load_state
from convnext_fast.trading.backtest import BacktestConfig, run_backtest
from convnext_fast.trading.broker import PaperBroker
from convnext_fast.trading.signals import signals_from_probs
from convnext_fast.train.prepare import normalisation

from .support import (
    HISTORY,
    HOUR_MS,
    SPEC,
    WINDOW,
    batch_features,
    batch_probs,
    make_engine,
    market,
    model_and_norm,
    seeded,
)


def _run(engine, candles, **ctx_kwargs) -> list[dict]:
    out = io.StringIO()
    ctx = LiveContext("BTCUSDT", "60", HOUR_MS, **ctx_kwargs)
    asyncio.run(run_live(engine, replay(candles, interval_ms=HOUR_MS), ctx, OutputSink(out)))
    return [json.loads(line) for line in out.getvalue().splitlines()]  # candle records only: no start()


@pytest.mark.slow
def test_replay_matches_batch_signals_and_backtest(rng):
    _check_replay_parity(market(HISTORY + 300, rng), rng)


@pytest.mark.data
def test_replay_parity_on_real_btc_candles(rng, btc_csv):
    candles = Candles.from_csv(btc_csv)
    start = int(rng.integers(0, len(candles) - HISTORY - 300))
    _check_replay_parity(candles[start : start + HISTORY + 300], rng)


def _check_replay_parity(candles: Candles, rng) -> None:
    model, _ = model_and_norm(rng)
    # The trainer's normalisation fitted on these candles, so real and synthetic inputs are alike in scale.
    n_hist = SPEC.warmup + 20  # seeds features; the window fills during the stream: first signals are Hold
    norm = normalisation(batch_features(candles), np.arange(n_hist + WINDOW, len(candles)), WINDOW)
    batch = batch_probs(model, norm, candles)[n_hist:]
    # A threshold inside the spread of the model's confidence, so Hold and trades both occur.
    known = ~np.isnan(batch[:, 0])
    threshold = float(np.median(batch[known, :2].max(axis=1)))
    engine = make_engine(model, norm, threshold=threshold)
    assert engine.warm_up(candles[:n_hist]) == n_hist
    records = _run(engine, candles[n_hist:])
    streamed = candles[n_hist:]
    assert [r["start_ms"] for r in records] == streamed.start_ms.tolist()

    live_signal = np.array([r["signal"] for r in records])
    live_probs = np.array([r["probs"] if r["probs"] is not None else [np.nan] * 3 for r in records])
    ready = ~np.isnan(batch[:, 0])
    first_ready = WINDOW - 1 + SPEC.warmup - n_hist
    assert np.flatnonzero(ready)[0] <= first_ready
    assert np.isnan(live_probs[:first_ready, 0]).all() and not np.isnan(live_probs[first_ready:, 0]).any()
    np.testing.assert_allclose(live_probs[first_ready:], batch[first_ready:], atol=1e-4)

    batch_signal = np.zeros(len(streamed), dtype=np.int8)
    batch_signal[first_ready:] = signals_from_probs(batch[first_ready:], threshold)
    # A bar whose probabilities sit within float noise of the threshold or of a tie may flip; none else.
    p = batch[first_ready:]
    knife_edge = (np.abs(p[:, :2] - threshold).min(axis=1) < 1e-4) | (np.abs(p[:, 0] - p[:, 1]) < 1e-4)
    differ = np.flatnonzero(live_signal[first_ready:] != batch_signal[first_ready:])
    assert set(differ) <= set(np.flatnonzero(knife_edge)), f"signals differ at bars {differ[:10]}"
    assert len(set(live_signal[first_ready:])) >= 2, "the test should exercise more than one decision"

    # The paper broker fills exactly as the backtest does on the same signals and sizes.
    sizes = np.array([r["size"] for r in records])
    bt = run_backtest(
        streamed.open,
        streamed.high,
        streamed.low,
        streamed.close,
        live_signal,
        sizes,
        BacktestConfig(taker_fee_bps=5.5, slippage_bps=1.0),
    )
    live_equity = np.array([r["equity"] for r in records])
    live_position = np.array([r["position"] for r in records])
    np.testing.assert_allclose(live_equity[:-1], bt.equity[:-1], rtol=1e-12)  # the last bar: forced close
    np.testing.assert_array_equal(live_position[:-1], bt.position[:-1])
    assert np.any(live_position != 0)


class _Counting:
    """Wraps the features to record which candles reach them."""

    def __init__(self, inner):
        self.inner, self.closes = inner, []

    def update(self, o, h, low, c, v):
        self.closes.append(c)
        return self.inner.update(o, h, low, c, v)


def test_duplicates_disorder_and_invalid_candles_never_reach_the_model(rng, caplog):
    candles = market(HISTORY + 50, rng)
    model, norm = model_and_norm(rng)
    features = _Counting(StreamingFeatures(SPEC))
    engine = make_engine(model, norm, features=features)
    engine.warm_up(candles[:HISTORY])
    stream = list(candles[HISTORY:])
    bad = stream[5]._replace(close=float("nan"))
    inverted = stream[9]._replace(high=stream[9].low * 0.9)
    noisy = [
        *stream[:5],
        bad,
        stream[5],
        stream[5],
        stream[3],
        *stream[6:9],
        inverted,
        stream[9],
        *stream[10:],
    ]
    with caplog.at_level("INFO", logger="convnext_fast.live"):
        records = _run(engine, noisy)
    assert [r["start_ms"] for r in records] == [c.start_ms for c in stream]
    assert all(np.isfinite(c) for c in features.closes)
    assert len(features.closes) == HISTORY + len(stream)
    text = caplog.text
    assert "rejected candle" in text and "non-finite" in text and "high/low" in text
    assert "ignored duplicate" in text and "ignored out-of-order" in text


def test_gap_is_backfilled_before_the_next_signal(rng, caplog):
    candles, engine, stream = seeded(rng, 70)
    holes = {12, 13, 14, 40}
    calls = []

    def backfill(start_ms, end_ms):
        calls.append((start_ms, end_ms))
        keep = (candles.start_ms >= start_ms) & (candles.start_ms <= end_ms)
        return candles[keep]

    with caplog.at_level("WARNING", logger="convnext_fast.live"):
        records = _run(engine, [c for i, c in enumerate(stream) if i not in holes], backfill=backfill)
    assert [r["start_ms"] for r in records] == stream.start_ms.tolist()
    assert [i for i, r in enumerate(records) if r["backfilled"]] == sorted(holes)
    assert calls == [
        (stream.start_ms[12], stream.start_ms[15] - 1),
        (stream.start_ms[40], stream.start_ms[41] - 1),
    ]
    assert "backfilled 3 through REST" in caplog.text


def test_failed_backfill_is_logged_and_the_loop_goes_on(rng, caplog):
    _, engine, stream = seeded(rng, 20)

    def backfill(start_ms, end_ms):
        raise ConnectionError("REST is down")

    with caplog.at_level("WARNING", logger="convnext_fast.live"):
        records = _run(engine, [c for i, c in enumerate(stream) if i != 5], backfill=backfill)
    assert len(records) == len(stream) - 1
    assert "REST backfill failed" in caplog.text and "REST is down" in caplog.text


def test_sigterm_then_resume_from_the_committed_state_continues_identically(rng, tmp_path):
    candles = market(HISTORY + 80, rng)
    model, norm = model_and_norm(rng)
    n_hist = HISTORY
    full = make_engine(model, norm, threshold=0.35)
    full.warm_up(candles[:n_hist])
    reference_records = _run(full, candles[n_hist:])

    state_path = tmp_path / "live_state.db"
    store = LiveStore(state_path)
    store.start_new({"source": "replay"})
    first = make_engine(model, norm, threshold=0.35)
    first.warm_up(candles[:n_hist])
    out = io.StringIO()

    async def interrupted():
        loop = asyncio.get_running_loop()
        loop.call_later(0.25, os.kill, os.getpid(), signal.SIGTERM)
        ctx = LiveContext("BTCUSDT", "60", HOUR_MS, store=store)
        return await run_live(
            first, replay(candles[n_hist:], interval_ms=HOUR_MS, speed=HOUR_MS / 10), ctx, OutputSink(out)
        )

    done = asyncio.run(interrupted())
    store.close()
    assert 0 < done < len(candles) - n_hist, "SIGTERM should stop the paced replay part-way"
    lines = out.getvalue().splitlines()
    assert len(lines) == done and json.loads(lines[-1])  # flushed, and the last line is whole
    state = load_state(state_path)
    assert state.last_start_ms == json.loads(lines[-1])["start_ms"] and state.bars_processed == done

    # Resume: broker, streaming features and window from the store; no history is replayed.
    resumed = make_engine(model, norm, threshold=0.35, broker=PaperBroker.from_state(state.broker))
    resumed.restore(state.engine, state.last_start_ms, state.bars_processed)
    upto = int(np.searchsorted(candles.start_ms, state.last_start_ms)) + 1
    rest = _run(resumed, candles[upto:])
    combined = [json.loads(line) for line in lines] + rest
    for key in ("start_ms", "signal", "position", "equity", "probs"):
        assert [r[key] for r in combined] == [r[key] for r in reference_records], key


def test_human_view_and_candle_problem_messages(rng):
    candles, engine, _ = seeded(rng, 15)
    out, human = io.StringIO(), io.StringIO()
    ctx = LiveContext("X", "60", HOUR_MS)
    asyncio.run(run_live(engine, replay(candles[HISTORY:], interval_ms=HOUR_MS), ctx, OutputSink(out, human)))
    assert len(human.getvalue().splitlines()) == len(out.getvalue().splitlines()) == 15
    assert "close" in human.getvalue() and "µs" in human.getvalue()
    summary = engine.latency.summary()
    assert set(summary) == {"features", "model", "decision", "total"}
    assert summary["total"]["n"] == 15 and summary["total"]["p99"] >= summary["model"]["p50"] > 0


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("open", float("inf"), "non-finite"),
        ("low", -1.0, "non-positive"),
        ("volume", -2.0, "negative volume"),
    ],
)
def test_candle_problem(field, value, why):
    from convnext_fast.live.loop import candle_problem

    good = Candle(0, 100.0, 110.0, 90.0, 105.0, 3.0)
    assert candle_problem(good) is None
    assert why in candle_problem(good._replace(**{field: value}))
    assert "not closed" in candle_problem(good._replace(closed=False))
