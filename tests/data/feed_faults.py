"""The feed fault suite of issue 13: each fault on the local fake Bybit, with candles lost / duplicated /
bogus and the time to recover. ``tests/data/test_feed_faults.py`` asserts on these outcomes; run this module
to print the table::

    PYTHONPATH=python python -m tests.data.feed_faults
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from convnext_fast.data.bybit import BybitClient, RetryPolicy
from convnext_fast.data.bybit_ws import StreamStats
from convnext_fast.data.candles import Candle, Candles
from convnext_fast.errors import UserError
from tests.data.fake_bybit import FakeBybit, random_candles

HOUR = 3_600_000
MINUTE = 60_000
# Stream ping interval and timeout (s) in these scenarios; `--ping 10` measures the defaults (10 s, 10 s).
PING = [0.2, 0.2]


@dataclass
class Outcome:
    fault: str
    expected: list[int]  # candle starts the consumer should have got (empty when an error is expected)
    got: list[int]
    seconds: float  # from the fault to the consumer having every expected candle (or the error)
    error: str | None = None
    stats: StreamStats | None = None
    notes: dict = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return len(set(self.expected) - set(self.got))

    @property
    def duplicated(self) -> int:
        return len(self.got) - len(set(self.got))

    @property
    def bogus(self) -> int:
        return len(set(self.got) - set(self.expected))


def make_client(fake: FakeBybit, **kw) -> BybitClient:
    options = dict(
        timeout=2.0,
        retry=RetryPolicy(max_retries=3, base_delay=0.005, max_delay=0.02),
        min_request_interval=0.0,
        progress=False,
        ping_interval=PING[0],
        ping_timeout=PING[1],
        reconnect_delay=0.01,
        max_reconnect_delay=0.05,
    )
    return BybitClient(fake.rest_url, fake.ws_url, **{**options, **kw})


# ---- REST ---------------------------------------------------------------------------------------------


def _rest(name: str, history: Candles, setup: Callable[[FakeBybit], None], *, end=True, **fake_kw) -> Outcome:
    with FakeBybit(history, **fake_kw) as fake, make_client(fake) as client:
        setup(fake)
        t0 = time.monotonic()
        try:
            got = client.fetch_klines(
                "BTCUSDT", fake.interval, history.start_ms[0], history.start_ms[-1] if end else None
            )
        except UserError as exc:
            return Outcome(name, [], [], time.monotonic() - t0, error=f"{type(exc).__name__}: {exc}")
        seconds = time.monotonic() - t0
        notes = {"requests": len(fake.requests)}
    return Outcome(name, history.start_ms.tolist(), got.start_ms.tolist(), seconds, notes=notes)


def rest_short_pages(rng) -> Outcome:
    return _rest("REST pages of 200 rows", random_candles(rng, 2500), lambda f: f.set_page_rows(200))


def rest_stuck_pages(rng) -> Outcome:
    return _rest("REST page that never advances", random_candles(rng, 2500), lambda f: f.set_stuck())


def rest_server_clock_ahead(rng) -> Outcome:
    """The server's clock (and its newest candles) 5 min ahead of this machine's; 1-minute candles."""
    server_now = (int(time.time() * 1000) + 5 * MINUTE) // MINUTE * MINUTE
    history = random_candles(rng, 20, "1", end_ms=server_now)
    return _rest("server clock 5 min ahead", history, lambda f: None, end=False, interval="1")


def rest_bad_row(variant: str, label: str):
    def scenario(rng) -> Outcome:
        history = random_candles(rng, 2500)
        return _rest(
            label, history, lambda f: f.queue_fault("bad_row", row=int(rng.integers(0, 900)), variant=variant)
        )

    return scenario


def rest_time_text(rng) -> Outcome:
    return _rest(
        '"time": "abc" (time endpoint)',
        random_candles(rng, 500),
        lambda f: f.queue_fault("bad_time", endpoint="time"),
    )


def rest_envelope_time_text(rng) -> Outcome:
    return _rest(
        '"time": "abc" (kline envelope)',
        random_candles(rng, 2500),
        lambda f: f.queue_fault("bad_time", count=3),
    )


REST_SCENARIOS = [
    rest_short_pages,
    rest_stuck_pages,
    rest_server_clock_ahead,
    rest_time_text,
    rest_envelope_time_text,
    rest_bad_row("time_text", 'row "time": "abc"'),
    rest_bad_row("text", 'price "abc"'),
    rest_bad_row("zero", "zero prices"),
    rest_bad_row("negative", "negative price"),
    rest_bad_row("high_low", "high < low"),
    rest_bad_row("spike", "price spike 1e50"),
]


# ---- WebSocket ----------------------------------------------------------------------------------------


def _frame(fake: FakeBybit, candle: Candle, *, confirm=True, **item_changes) -> dict:
    message = fake._kline_message(candle, bool(confirm))
    message["data"][0].update(confirm=confirm, **item_changes)
    return message


def _ws(name: str, rng, fault: Callable, *, n_new: int = 6, data_timeout: float | None = None) -> Outcome:
    """Stream closed candles live; ``fault(fake, new)`` runs after the first two are delivered and may
    push anything; every candle of ``new`` must arrive exactly once, whatever the fault did."""
    history = random_candles(rng, 300)
    more = random_candles(rng, n_new, end_ms=int(history.start_ms[-1]) + (n_new + 1) * HOUR)
    new = list(more)
    stats = StreamStats()
    with FakeBybit(history) as fake, make_client(fake) as client:

        async def scenario():
            got: list[Candle] = []

            async def consume():
                async for candle in client.stream_klines(
                    "BTCUSDT", "60", stats=stats, data_timeout=data_timeout
                ):
                    got.append(candle)

            task = asyncio.create_task(consume())
            await asyncio.to_thread(fake.wait_for_subscribers, 1)
            for c in new[:2]:
                fake.push_candle(c)
            while len(got) < 2:
                await asyncio.sleep(0.005)
            t0 = time.monotonic()
            await asyncio.to_thread(fault, fake, new)
            deadline = time.monotonic() + 10 + 2 * sum(PING)
            while {c.start_ms for c in got} < {c.start_ms for c in new} and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            seconds = time.monotonic() - t0
            await asyncio.sleep(0.1)  # anything extra (a duplicate, a bogus candle) would show up now
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return got, seconds

        got, seconds = asyncio.run(asyncio.wait_for(scenario(), 30 + 4 * sum(PING)))
        notes = {"kline_requests": len(fake.requests), "subscribes": fake.subscribe_count}
    outcome = Outcome(
        name, [c.start_ms for c in new], [c.start_ms for c in got], seconds, stats=stats, notes=notes
    )
    outcome.notes["exact"] = [c._replace(closed=True) for c in got] == [c._replace(closed=True) for c in new]
    return outcome


def _then_rest(fake: FakeBybit, new: list[Candle], frame: dict | None, *, closed_missed: int = 1) -> None:
    """Push ``frame`` in place of the next candle(s) (which REST knows), then the rest normally."""
    for c in new[2 : 2 + closed_missed]:
        fake.push_candle(c, deliver=False)
    if frame is not None:
        fake.push_message(frame)
    for c in new[2 + closed_missed :]:
        fake.push_candle(c)


def ws_data_not_a_list(rng) -> Outcome:
    return _ws(
        'WS {"data": 5}', rng, lambda f, new: _then_rest(f, new, {"topic": "kline.60.BTCUSDT", "data": 5})
    )


def ws_start_1e18(rng) -> Outcome:
    return _ws("WS start=1e18", rng, lambda f, new: _then_rest(f, new, _frame(f, new[2], start=10**18)))


def ws_start_off_by_1ms(rng) -> Outcome:
    return _ws(
        "WS start off by 1 ms",
        rng,
        lambda f, new: _then_rest(f, new, _frame(f, new[2], start=new[2].start_ms + 1)),
    )


def ws_confirm_string(rng) -> Outcome:
    def fault(fake, new):
        # A forming update of the next candle whose confirm is the string "false" (truthy in Python).
        fake.push_message(_frame(fake, new[2]._replace(close=new[2].open), confirm="false"))
        for c in new[2:]:
            fake.push_candle(c)

    return _ws('WS "confirm": "false"', rng, fault)


def ws_non_numeric(rng) -> Outcome:
    return _ws('WS price "abc"', rng, lambda f, new: _then_rest(f, new, _frame(f, new[2], high="abc")))


def ws_stalled_socket(rng) -> Outcome:
    def fault(fake, new):
        fake.mute_connections()  # open, sends nothing, answers no ping
        for c in new[2:4]:
            fake.push_candle(c, deliver=False)
        fake.wait_for_subscribers(1, timeout=10 + 2 * sum(PING))
        for c in new[4:]:
            fake.push_candle(c)

    return _ws("WS stalled socket (no pongs)", rng, fault)


def ws_silent_socket(rng) -> Outcome:
    def fault(fake, new):
        fake.mute_connections(answer_pings=True)  # open, answers pings, sends no kline
        for c in new[2:4]:
            fake.push_candle(c, deliver=False)
        fake.wait_for_subscribers(1, timeout=10 + 2 * sum(PING))
        for c in new[4:]:
            fake.push_candle(c)

    return _ws("WS open but silent (pongs only)", rng, fault, data_timeout=0.5)


WS_SCENARIOS = [
    ws_data_not_a_list,
    ws_start_1e18,
    ws_start_off_by_1ms,
    ws_confirm_string,
    ws_non_numeric,
    ws_stalled_socket,
    ws_silent_socket,
]


def main() -> None:
    import sys

    if "--ping" in sys.argv:  # e.g. --ping 10: the stall scenarios with the client's default liveness
        PING[:] = [float(sys.argv[sys.argv.index("--ping") + 1])] * 2
    rng = np.random.default_rng()
    print("| fault | candles lost | duplicated | bogus | recovery s | result |")
    print("|---|---|---|---|---|---|")
    for scenario in REST_SCENARIOS + WS_SCENARIOS:
        o = scenario(rng)
        result = o.error.split(";")[0][:90] if o.error else f"{len(o.got)}/{len(o.expected)} candles"
        if o.stats is not None:
            result += f", rejected_frames={o.stats.rejected_frames}, reconnects={o.stats.reconnects}"
        lost = "-" if o.error else o.lost
        print(f"| {o.fault} | {lost} | {o.duplicated} | {o.bogus} | {o.seconds:.2f} | {result} |")


if __name__ == "__main__":
    threading.current_thread().name = "feed-faults"
    main()
