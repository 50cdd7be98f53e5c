"""Issue 13's feed faults on the local fake Bybit: 0 candles lost, 0 duplicated, 0 bogus, or the exact
error; bounded and cancellable backfills; holes filled by ``update`` and reported by ``fetch``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import threading
import time

import numpy as np
import pytest

from convnext_fast.data import cli
from convnext_fast.data.bybit import BybitError, BybitFetchCancelled
from convnext_fast.data.candles import Candles
from convnext_fast.data.store import CandleStore
from tests.data import feed_faults as ff
from tests.data.fake_bybit import FakeBybit, random_candles

HOUR = 3_600_000


@pytest.mark.parametrize(
    "scenario",
    [ff.rest_short_pages, ff.rest_server_clock_ahead, ff.rest_envelope_time_text],
    ids=lambda s: s.__name__,
)
def test_rest_faults_lose_nothing(rng, scenario):
    o = scenario(rng)
    assert o.error is None, o.error
    assert (o.lost, o.duplicated, o.bogus) == (0, 0, 0) and len(o.got) == len(o.expected)


def test_short_pages_are_followed_up_not_skipped(rng):
    o = ff.rest_short_pages(rng)
    assert o.lost == 0 and o.notes["requests"] >= 2500 // 200


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        (ff.rest_stuck_pages, r"BybitError: Bybit kline row \d+ starts at .* outside the requested window"),
        (ff.rest_time_text, r"BybitError: Bybit /v5/market/time sent a non-numeric time"),
        (
            ff.rest_bad_row("time_text", ""),
            r"BybitError: Bybit kline row \d+ has a non-numeric field: \['abc'",
        ),
        (ff.rest_bad_row("text", ""), r"BybitError: Bybit kline row \d+ has a non-numeric field: .*'abc'"),
        (
            ff.rest_bad_row("zero", ""),
            r"InvalidCandlesError: Bybit kline page .*: non-positive open at index \d+",
        ),
        (
            ff.rest_bad_row("negative", ""),
            r"InvalidCandlesError: .*: non-positive low at index \d+ .*low must be > 0",
        ),
        (
            ff.rest_bad_row("high_low", ""),
            r"InvalidCandlesError: .*: inconsistent bar at index \d+ .*high/low",
        ),
        (ff.rest_bad_row("spike", ""), r"InvalidCandlesError: .*: implausible high at index \d+ .*1e\+50"),
    ],
)
def test_rest_faults_raise_the_exact_error(rng, scenario, message):
    o = scenario(rng)
    assert o.error is not None and "\n" not in o.error
    assert re.search(message, o.error), o.error


@pytest.mark.parametrize("scenario", ff.WS_SCENARIOS, ids=lambda s: s.__name__)
def test_stream_faults_lose_and_repeat_nothing(rng, scenario):
    o = scenario(rng)
    assert (o.lost, o.duplicated, o.bogus) == (0, 0, 0), (o.expected, o.got)
    assert o.notes["exact"], "every candle exactly as the exchange has it"
    stalled = scenario in (ff.ws_stalled_socket, ff.ws_silent_socket)
    assert o.stats.rejected_frames == (0 if stalled else 1)
    assert o.stats.reconnects == (1 if stalled else 0)
    assert o.stats.closed_candles == len(o.expected)
    if scenario is ff.ws_start_1e18:
        assert o.notes["kline_requests"] <= 2, "a start of 1e18 must not start a backfill"
    if stalled:
        assert o.seconds < 3 * sum(ff.PING) + 1.0, "a stalled socket is found within ping interval + timeout"


def test_stream_liveness_defaults():
    client = ff.BybitClient()
    assert (client.ping_interval, client.ping_timeout) == (10.0, 10.0)


# ---- bounded, cancellable walks ------------------------------------------------------------------------


def test_fetch_is_bounded_and_cancellable(rng):
    history = random_candles(rng, 3000)
    with FakeBybit(history) as fake, ff.make_client(fake) as client:
        with pytest.raises(BybitError, match=r"did not finish .* within 2 requests"):
            client.fetch_klines("BTCUSDT", "60", history.start_ms[0], history.start_ms[-1], max_requests=2)
        fake.set_page_rows(10)  # a walk of ~300 requests, each slowed down below
        fake.queue_fault("slow", count=1000, delay=0.05)
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        t0 = time.monotonic()
        with pytest.raises(BybitFetchCancelled, match="cancelled"):
            client.fetch_klines("BTCUSDT", "60", history.start_ms[0], history.start_ms[-1], cancel=cancel)
        assert time.monotonic() - t0 < 0.3 + 0.5
        with pytest.raises(BybitFetchCancelled, match="time budget"):
            client.fetch_klines("BTCUSDT", "60", history.start_ms[0], history.start_ms[-1], timeout_s=0.2)


def test_far_future_end_costs_no_extra_requests(rng):
    history = random_candles(rng, 500)
    with FakeBybit(history) as fake, ff.make_client(fake) as client:
        got = client.fetch_klines("BTCUSDT", "60", history.start_ms[0], 10**18)
        assert got.equals(history) and len(fake.requests) == 1


def test_cancelled_stream_stops_its_backfill_thread(rng):
    history = random_candles(rng, 3000)
    with FakeBybit(history) as fake, ff.make_client(fake) as client:
        fake.set_page_rows(10)
        fake.queue_fault("slow", count=1000, delay=0.05)

        async def consume_then_cancel():
            async def consume():
                async for _ in client.stream_klines("BTCUSDT", "60", since_ms=int(history.start_ms[0])):
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.4)  # the REST backfill is under way in its thread
            t0 = time.monotonic()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return time.monotonic() - t0

        assert asyncio.run(consume_then_cancel()) < 0.5
        time.sleep(0.2)  # a request in flight when the event was set may still finish
        seen = len(fake.requests)
        time.sleep(0.4)
        assert len(fake.requests) == seen, "the backfill thread kept fetching after the stream was cancelled"
        assert seen < 100


# ---- holes: filled by update, reported by fetch ---------------------------------------------------------


def _with_holes(rng, candles: Candles, n_holes: int) -> tuple[Candles, int]:
    keep = np.ones(len(candles), bool)
    for start in rng.choice(np.arange(10, len(candles) - 20), size=n_holes, replace=False):
        keep[start : start + int(rng.integers(1, 6))] = False
    return _take(candles, keep), int((~keep).sum())


def _take(candles: Candles, keep: np.ndarray) -> Candles:
    return Candles(**{k: v[keep] for k, v in candles.columns().items()})


def test_update_fills_holes_left_earlier(rng, tmp_path):
    history = random_candles(rng, 1500)
    holed, missing = _with_holes(rng, history[:-100], 4)
    store = CandleStore(tmp_path / "store")
    store.write(holed, "BTCUSDT", "60")
    assert len(holed.gaps("60")) >= 1
    with FakeBybit(history) as fake, ff.make_client(fake) as client:
        report = store.update(client, "BTCUSDT", "60")
    assert report.candles.equals(history) and report.gaps == []
    assert report.added == missing + 100


def test_fetch_cli_reports_exchange_holes(rng, tmp_path, capsys):
    history = random_candles(rng, 800)
    holed, _ = _with_holes(rng, history, 2)  # the exchange itself lacks these
    with FakeBybit(holed) as fake:
        args = argparse.Namespace(
            symbol="BTCUSDT",
            interval="60",
            category="linear",
            store=str(tmp_path / "s"),
            start=str(int(history.start_ms[0])),
            end=None,
            import_csv=None,
            base_url=fake.rest_url,
        )
        assert cli.run(args) == 0
    out = capsys.readouterr().out
    assert out.count("gap:") == len(holed.gaps("60")) >= 1
