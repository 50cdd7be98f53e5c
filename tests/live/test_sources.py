"""The whole live loop against the local fake Bybit (WebSocket + REST): a dropped connection whose gap is
backfilled, duplicated candles, a NaN candle; REST polling; the WebSocket → REST fallback; paced replay."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import numpy as np
import pytest

from convnext_fast.data.bybit import BybitClient, RetryPolicy
from convnext_fast.live.loop import LiveContext, OutputSink, run_live
from convnext_fast.live.sources import replay, rest_polling, websocket_with_fallback

from ..data.fake_bybit import FakeBybit
from .support import HISTORY, HOUR_MS, make_engine, market, model_and_norm

pytestmark = pytest.mark.timeout(60)


def _client(fake: FakeBybit, **kwargs) -> BybitClient:
    return BybitClient(
        fake.rest_url, fake.ws_url, progress=False, min_request_interval=0.0, reconnect_delay=0.05,
        max_reconnect_delay=0.2, retry=RetryPolicy(max_retries=2, base_delay=0.01), **kwargs,
    )  # fmt: skip


def _live(engine, source, client, max_bars) -> list[dict]:
    out = io.StringIO()
    ctx = LiveContext(
        "BTCUSDT",
        "60",
        HOUR_MS,
        backfill=lambda s, e: client.fetch_klines("BTCUSDT", "60", s, e),
        max_bars=max_bars,
    )
    asyncio.run(asyncio.wait_for(run_live(engine, source, ctx, OutputSink(out)), 45))
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _in_thread(fn) -> threading.Thread:
    errors = []

    def guarded():
        try:
            fn()
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.errors = errors
    thread.start()
    return thread


# The module's 60 s is too tight for a cold numba cache on a loaded machine: building the engine and the
# first candle (which compiles the broker) took ~40 s there before the market even starts.
@pytest.mark.timeout(150)
def test_websocket_loop_survives_drop_gap_duplicates_and_nan(rng, caplog):
    candles = market(HISTORY + 10, rng)
    history, future = candles[:HISTORY], list(candles[HISTORY:])
    model, norm = model_and_norm(rng)
    engine = make_engine(model, norm)
    with FakeBybit(history) as fake:
        client = _client(fake)
        seeded = client.fetch_klines("BTCUSDT", "60", int(history.start_ms[0]))
        assert engine.warm_up(seeded) == HISTORY
        source = websocket_with_fallback(
            client, "BTCUSDT", "60", HOUR_MS, since_ms=int(history.start_ms[-1]) + HOUR_MS
        )

        def market_maker():
            fake.wait_for_subscribers(1)
            for c in future[:5]:
                fake.push_candle(c)
            fake.push_candle(future[4])  # a duplicate
            fake.push_candle(future[5], deliver=False)  # REST knows the true candle ...
            broken = fake._kline_message(future[5]._replace(close=float("nan")), True)
            fake.push_message(broken)  # ... the stream delivers a NaN one
            fake.push_candle(future[6])
            time.sleep(0.3)
            fake.drop_connections()
            fake.push_candle(future[7], deliver=False)  # missed while disconnected
            fake.push_candle(future[8], deliver=False)
            fake.wait_for_subscribers(1)
            fake.push_candle(future[9])

        driver = _in_thread(market_maker)
        with caplog.at_level("INFO"):
            records = _live(engine, source, client, max_bars=10)
        driver.join(10)
        assert not driver.errors, driver.errors
        client.close()

    assert [r["start_ms"] for r in records] == [c.start_ms for c in future], (
        "every candle exactly once, in order"
    )
    assert [r["close"] for r in records] == [c.close for c in future], "the NaN candle was replaced by REST's"
    assert all(r["probs"] is not None and np.isfinite(r["probs"]).all() for r in records)
    # The stream itself drops the NaN frame (data/bybit_ws.py) and backfills candle 5 through REST.
    assert "rejected kline frame" in caplog.text and "non-finite" in caplog.text
    assert fake.subscribe_count >= 2, "the stream reconnected after the drop"


def test_rest_polling_yields_each_new_closed_candle_once(rng):
    candles = market(8, rng)
    with FakeBybit(candles[:3]) as fake:
        client = _client(fake)

        async def take(n):
            got = []
            async for c in rest_polling(
                client, "BTCUSDT", "60", HOUR_MS, since_ms=int(candles.start_ms[1]), poll_s=0.05
            ):
                got.append(c)
                if len(got) == 2:
                    for later in candles[3:6]:
                        fake.push_candle(later, deliver=False)
                if len(got) == n:
                    return got

        got = asyncio.run(asyncio.wait_for(take(5), 20))
        client.close()
    assert [c.start_ms for c in got] == candles.start_ms[1:6].tolist()


def test_websocket_unreachable_falls_back_to_rest(rng, caplog):
    candles = market(6, rng)
    with FakeBybit(candles) as fake:
        client = _client(fake)
        client.ws_url = "ws://127.0.0.1:9/v5/public/linear"  # nothing listens on the discard port

        async def first():
            source = websocket_with_fallback(
                client,
                "BTCUSDT",
                "60",
                HOUR_MS,
                since_ms=int(candles.start_ms[2]),
                max_reconnects=1,
                poll_s=0.05,
            )
            return await _take(source, 3)

        with caplog.at_level("WARNING"):
            got = asyncio.run(asyncio.wait_for(first(), 20))
        client.close()
    assert [c.start_ms for c in got] == candles.start_ms[2:5].tolist()
    assert "falling back to REST polling" in caplog.text


async def _take(source, n):
    got = []
    async for c in source:
        got.append(c)
        if len(got) == n:
            break
    return got


def test_paced_replay_takes_the_expected_time(rng):
    candles = market(6, rng)
    start = time.perf_counter()
    got = asyncio.run(_take(replay(candles, interval_ms=HOUR_MS, speed=HOUR_MS / 40), 6))  # 40 ms a candle
    elapsed = time.perf_counter() - start
    assert [c.start_ms for c in got] == candles.start_ms.tolist()
    assert 0.2 <= elapsed < 2.0
    with pytest.raises(ValueError, match="speed"):
        asyncio.run(_take(replay(candles, interval_ms=HOUR_MS, speed=0), 1))
