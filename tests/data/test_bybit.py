"""The real Bybit client against the local fake server: exact candles, pagination, faults, the stream."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np
import pytest

from convnext_fast.data.bybit import (
    BybitClient,
    BybitError,
    BybitRateLimitError,
    BybitRetriesExhausted,
    RetryPolicy,
)
from convnext_fast.data.candles import Candle, Candles
from convnext_fast.errors import UserError
from tests.data.fake_bybit import FakeBybit, random_candles

HOUR = 3_600_000
FAST_RETRY = RetryPolicy(max_retries=3, base_delay=0.005, max_delay=0.02)


def make_client(fake: FakeBybit, **kw) -> BybitClient:
    options = dict(timeout=2.0, retry=FAST_RETRY, min_request_interval=0.0, progress=False)
    options.update(ping_interval=0.2, reconnect_delay=0.01, max_reconnect_delay=0.05)
    return BybitClient(fake.rest_url, fake.ws_url, **{**options, **kw})


@pytest.fixture
def history(rng) -> Candles:
    return random_candles(rng, int(rng.integers(2100, 2600)))


@pytest.fixture
def fake(history):
    with FakeBybit(history) as server:
        yield server


@pytest.fixture
def client(fake):
    with make_client(fake) as c:
        yield c


def fetch_all(client: BybitClient, history: Candles) -> Candles:
    return client.fetch_klines("BTCUSDT", "60", history.start_ms[0], history.start_ms[-1])


# ---- REST -------------------------------------------------------------------------------------------


def test_fetch_returns_exact_candles_in_pages(fake, client, history):
    got = fetch_all(client, history)
    assert got.equals(history)
    span = history.start_ms[-1] - history.start_ms[0] + HOUR
    assert len(fake.requests) == -(-span // (1000 * HOUR))
    for request in fake.requests:
        assert int(request["limit"]) <= 1000 and request["category"] == "linear"
        assert int(request["end"]) - int(request["start"]) < 1000 * HOUR


def test_fetch_sub_range_and_year_of_hours_is_nine_pages(rng):
    year = random_candles(rng, 365 * 24)
    with FakeBybit(year) as fake, make_client(fake) as client:
        a, b = sorted(rng.choice(len(year), size=2, replace=False))
        assert client.fetch_klines("BTCUSDT", 60, year.start_ms[a], year.start_ms[b]).equals(year[a : b + 1])
        fake.requests.clear()
        assert client.fetch_klines("BTCUSDT", "60", year.start_ms[0], year.start_ms[-1]).equals(year)
        assert len(fake.requests) == 9


def test_fetch_without_end_stops_at_server_clock_and_drops_forming_candle(fake, client, history):
    fake.set_now(int(history.start_ms[-1]) + HOUR // 2)  # the last candle has not closed yet
    got = client.fetch_klines("BTCUSDT", "60", history.start_ms[0])
    assert got.equals(history[:-1])


@pytest.mark.parametrize(
    "kind, options",
    [
        ("http", {"status": 500}),
        ("http", {"status": 502}),
        ("http", {"status": 503}),
        ("http", {"status": 429}),
        ("retcode", {"code": 10000}),
        ("retcode", {"code": 10016}),
        ("rate_limit", {"reset_after_ms": 60}),
        ("slow", {"delay": 3.0}),
        ("duplicate_rows", {}),
        ("shuffle_rows", {}),
    ],
)
def test_transient_faults_are_retried_or_repaired(fake, history, rng, kind, options):
    # The timeout sits far from both a normal reply (ms) and the "slow" fault (3 s), so a loaded machine
    # cannot turn an ordinary request into a timeout and an extra retry (0.25 s did, under load).
    with make_client(fake, timeout=1.0) as client:
        fake.queue_fault(kind, count=2, **options)
        t0 = time.monotonic()
        got = fetch_all(client, history)
        elapsed = time.monotonic() - t0
    assert got.equals(history)
    pages = -(-(history.start_ms[-1] - history.start_ms[0] + HOUR) // (1000 * HOUR))
    retried = kind not in ("duplicate_rows", "shuffle_rows")
    assert len(fake.requests) == pages + (2 if retried else 0)
    if kind == "rate_limit":
        assert elapsed >= 2 * 0.045, "10006 must wait for X-Bapi-Limit-Reset-Timestamp"


def test_retries_give_up_with_clear_error(fake, client, history):
    fake.queue_fault("http", count=FAST_RETRY.max_retries + 1, status=503)
    with pytest.raises(BybitRetriesExhausted, match=r"failed 4 times, last: HTTP 503"):
        fetch_all(client, history)
    assert len(fake.requests) == FAST_RETRY.max_retries + 1


def test_http_403_tells_to_back_off_without_retry(fake, client, history):
    fake.queue_fault("http", status=403)
    with pytest.raises(BybitRateLimitError, match="back off"):
        fetch_all(client, history)
    assert len(fake.requests) == 1


def test_bad_parameters_and_unknown_symbol_fail_at_once(fake, client, history):
    with pytest.raises(BybitError, match=r"10001: Not supported symbols.*'ETHUSDT'"):
        client.fetch_klines("ETHUSDT", "60", history.start_ms[0], history.start_ms[-1])
    fake.queue_fault("retcode", code=10001, msg="params error")
    with pytest.raises(BybitError, match="10001: params error"):
        fetch_all(client, history)
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("malformed_json", {}, "malformed JSON"),
        ("bad_row", {"row": 3, "variant": "short"}, r"row 3 should be 7 fields"),
        ("bad_row", {"row": 7, "variant": "text"}, r"row 7 has a non-numeric field.*'abc'"),
    ],
)
def test_garbled_responses_name_the_problem(fake, client, history, kind, options, message):
    fake.queue_fault(kind, **options)
    with pytest.raises(BybitError, match=message):
        fetch_all(client, history)


def test_requests_are_paced(fake, history):
    with make_client(fake, min_request_interval=0.03) as client:
        fetch_all(client, history)
    times = np.array([r["t"] for r in fake.requests])
    assert len(times) >= 3 and np.diff(times).min() >= 0.025
    # The default pace: at most 100 requests per 5 s, a sixth of Bybit's 600 / 5 s limit.
    assert 5 / BybitClient().min_request_interval <= 100


def test_progress_bar_only_when_asked_or_on_a_tty(fake, history, capfd):
    with make_client(fake, progress=None) as client:
        fetch_all(client, history)
    assert "page" not in capfd.readouterr().err, "pytest's stderr is not a TTY, so no bar"
    with make_client(fake, progress=True) as client:
        fetch_all(client, history)
    assert "BTCUSDT 60" in capfd.readouterr().err


def test_arguments_are_checked(client, history):
    with pytest.raises(UserError, match="interval '7'"):
        client.fetch_klines("BTCUSDT", "7", 0, 1)
    with pytest.raises(UserError, match="start_ms <= end_ms"):
        client.fetch_klines("BTCUSDT", "60", 10, 5)
    with pytest.raises(UserError, match="limit"):
        client.fetch_klines("BTCUSDT", "60", 0, 5, limit=1001)
    with pytest.raises(UserError, match="symbol"):
        client.fetch_klines("BTC/USDT", "60", 0, 5)
    with pytest.raises(UserError, match="category 'futures'"):
        BybitClient(category="futures")


def test_backoff_is_exponential_with_jitter():
    policy = RetryPolicy(base_delay=0.1, max_delay=1.0)
    for attempt in range(6):
        cap = min(1.0, 0.1 * 2**attempt)
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays) and len(set(delays)) > 1


# ---- WebSocket ---------------------------------------------------------------------------------------


class StreamReader:
    """Pumps an async candle stream into a queue so a test can push to the fake and read back in turn."""

    def __init__(self, stream):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._pump(stream))

    async def _pump(self, stream):
        async for candle in stream:
            await self.queue.put(candle)

    async def take(self, n: int, timeout: float = 5.0) -> list[Candle]:
        return [await asyncio.wait_for(self.queue.get(), timeout) for _ in range(n)]

    async def assert_nothing_more(self, wait: float = 0.15) -> None:
        await asyncio.sleep(wait)
        assert self.queue.empty(), f"unexpected extra candles: {[self.queue.get_nowait() for _ in range(3)]}"

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def future_candles(rng, history: Candles, n: int) -> list[Candle]:
    """``n`` candles continuing ``history``; the generator's random walk has no tie to ``history``."""
    more = random_candles(rng, n, end_ms=int(history.start_ms[-1]) + (n + 1) * HOUR)
    return list(more)


def as_closed(candles) -> list[Candle]:
    return [c._replace(closed=True) for c in candles]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_stream_yields_closed_candles_once_and_partials_on_request(fake, client, history, rng):
    new = future_candles(rng, history, 4)

    async def scenario(include_partial: bool):
        reader = StreamReader(client.stream_klines("BTCUSDT", "60", include_partial=include_partial))
        await asyncio.to_thread(fake.wait_for_subscribers, 1)
        got = []
        for c in new:
            fake.push_candle(c._replace(close=c.open), confirm=False)
            fake.push_candle(c)
            fake.push_candle(c)  # Bybit may repeat a confirmed candle
            got += await reader.take(2 if include_partial else 1)
        await reader.assert_nothing_more()
        await reader.close()
        return got

    closed_only = run(scenario(False))
    assert closed_only == as_closed(new)
    with_partials = run(scenario(True))
    assert with_partials[1::2] == as_closed(new)
    assert with_partials[0::2] == [c._replace(close=c.open, closed=False) for c in new]


def test_stream_backfills_history_then_goes_live(fake, client, history, rng):
    new = future_candles(rng, history, 2)
    since = int(history.start_ms[-25])

    async def scenario():
        reader = StreamReader(client.stream_klines("BTCUSDT", "60", since_ms=since))
        backfilled = await reader.take(25)
        await asyncio.to_thread(fake.wait_for_subscribers, 1)
        for c in new:
            fake.push_candle(c)
        live = await reader.take(2)
        await reader.assert_nothing_more()
        await reader.close()
        return backfilled, live

    backfilled, live = run(scenario())
    assert backfilled == list(history[-25:]) and live == as_closed(new)


def test_dropped_connection_and_lost_messages_are_backfilled_exactly(fake, client, history, rng):
    new = future_candles(rng, history, 9)

    async def scenario():
        reader = StreamReader(client.stream_klines("BTCUSDT", "60"))
        await asyncio.to_thread(fake.wait_for_subscribers, 1)
        for c in new[:3]:
            fake.push_candle(c)
        got = await reader.take(3)
        for c in new[3:5]:  # closed while the client was (about to be) disconnected
            fake.push_candle(c, deliver=False)
        fake.drop_connections()
        await asyncio.to_thread(fake.wait_for_subscribers, 1)
        got += await reader.take(2)  # the reconnect backfills through REST at once
        fake.push_candle(new[5])
        fake.push_candle(new[6], deliver=False)  # a message lost on a live connection
        fake.push_candle(new[7], confirm=False)  # the next candle's first update reveals the hole
        fake.push_candle(new[7])
        fake.push_candle(new[8])
        got += await reader.take(4)
        await reader.assert_nothing_more()
        await reader.close()
        return got

    got = run(scenario())
    assert [c.start_ms for c in got] == [c.start_ms for c in new]
    assert got == as_closed(new)
    assert fake.subscribe_count == 2


def test_stream_pings_and_rejects_unknown_topic(fake, history):
    with make_client(fake, ping_interval=0.03) as client:

        async def listen():
            reader = StreamReader(client.stream_klines("BTCUSDT", "60"))
            await asyncio.to_thread(fake.wait_for_subscribers, 1)
            await asyncio.sleep(0.2)
            await reader.close()

        run(listen())
        assert fake.pings >= 3

        async def bad_topic():
            async for _ in client.stream_klines("ETHUSDT", "60"):
                pass

        with pytest.raises(BybitError, match=r"refused subscription to kline\.60\.ETHUSDT"):
            run(bad_topic())


def test_garbled_stream_messages_are_skipped_and_the_lost_candle_backfilled(fake, client, history, rng):
    new = future_candles(rng, history, 3)

    async def scenario():
        reader = StreamReader(client.stream_klines("BTCUSDT", "60"))
        await asyncio.to_thread(fake.wait_for_subscribers, 1)
        fake.push_candle(new[0])
        fake.push_message("{not json")
        fake.push_candle(new[1], deliver=False)
        broken = {"topic": "kline.60.BTCUSDT", "type": "snapshot", "ts": 0, "data": [{"start": "x"}]}
        fake.push_message(broken)
        fake.push_candle(new[2])
        got = await reader.take(3)
        await reader.assert_nothing_more()
        await reader.close()
        return got

    assert run(scenario()) == as_closed(new)


def test_stream_gives_up_after_max_reconnects(fake):
    client = make_client(fake)
    fake.stop()  # nothing listens on the port any more

    async def consume():
        async for _ in client.stream_klines("BTCUSDT", "60", max_reconnects=2):
            pass

    with pytest.raises(BybitError, match="lost 3 times in a row"):
        run(consume())
