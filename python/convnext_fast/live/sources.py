"""Where closed candles come from: Bybit WebSocket (with REST polling as the fallback) or a replay of
stored candles (the candle store or a CSV), at full speed or paced with ``speed``.

Blocking REST calls run in daemon threads (:func:`~convnext_fast.live.loop.in_thread`), so a stop
signal never waits for a slow server.

Every source is an async iterator of closed :class:`~convnext_fast.data.candles.Candle` records in start
order; the loop still guards against duplicates, disorder and gaps, so a misbehaving source cannot
double-count a candle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from ..data.bybit import BybitError
from ..data.candles import Candle, Candles
from .loop import in_thread

log = logging.getLogger("convnext_fast.live")

# Yield to the event loop this often during a full-speed replay, so SIGINT is still heard.
_REPLAY_YIELD_EVERY = 64


async def replay(candles: Candles, *, interval_ms: int, speed: float | None = None) -> AsyncIterator[Candle]:
    """Candles one by one; ``speed`` None is as fast as possible, else ``speed`` × real time (e.g. 3600 turns
    an hour candle into one second)."""
    if speed is not None and not speed > 0:
        raise ValueError(f"speed must be > 0 (or None for full speed), got {speed}")
    pause = None if speed is None else interval_ms / 1000.0 / speed
    for i, candle in enumerate(candles):
        if pause is not None:
            await asyncio.sleep(pause)
        elif i % _REPLAY_YIELD_EVERY == 0:
            await asyncio.sleep(0)
        yield candle


async def rest_polling(
    client,
    symbol: str,
    interval: str,
    interval_ms: int,
    *,
    since_ms: int,
    poll_s: float = 5.0,
    until: float | None = None,
) -> AsyncIterator[Candle]:
    """Poll ``fetch_klines`` for closed candles from ``since_ms`` on; network faults back off and retry.
    ``until`` (a ``time.monotonic()`` instant) ends the polling, e.g. to try the WebSocket again."""
    owed, failures = int(since_ms), 0
    while until is None or time.monotonic() < until:
        try:
            fresh = await in_thread(client.fetch_klines, symbol, interval, owed, None)
            failures = 0
        except BybitError as exc:
            failures += 1
            delay = min(60.0, poll_s * 2**failures)
            log.warning("REST poll failed (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            continue
        for candle in fresh:
            if candle.start_ms >= owed:
                owed = candle.start_ms + interval_ms
                yield candle
        # Wake shortly after the next candle is due to close rather than on a blind fixed beat.
        due_s = (owed + interval_ms) / 1000.0 - time.time()
        await asyncio.sleep(max(0.05, min(poll_s, due_s + 0.5)))


def watchdog_seconds(interval_ms: int) -> float:
    """How long the WebSocket may go without a closed candle before the watchdog acts: one interval plus
    a grace of 5 % of it (at least 5 s, at most 2 min) for the exchange to confirm the candle."""
    interval_s = interval_ms / 1000.0
    return interval_s + min(120.0, max(5.0, 0.05 * interval_s))


async def websocket_with_fallback(
    client,
    symbol: str,
    interval: str,
    interval_ms: int,
    *,
    since_ms: int,
    max_reconnects: int = 5,
    poll_s: float = 5.0,
    watchdog_s: float | None = None,
    retry_ws_s: float = 30.0,
    max_retry_ws_s: float = 600.0,
    on_reconnect: Callable[[], None] | None = None,
    stats=None,
) -> AsyncIterator[Candle]:
    """The Bybit kline WebSocket (which reconnects with backoff and backfills its own gaps), watched:

    * no closed candle within ``watchdog_s`` (default :func:`watchdog_seconds`) — a socket that stays
      open but says nothing — → the candles owed are fetched through REST and the socket is reopened;
    * after ``max_reconnects`` failures in a row, REST polling from the next candle owed, for
      ``retry_ws_s`` seconds, then the WebSocket again; the wait doubles up to ``max_retry_ws_s`` while
      the WebSocket keeps failing, so a long outage polls REST without ever giving up on the socket.

    ``stats`` (a ``data.bybit_ws.StreamStats``) collects the stream's counters across reconnects."""
    from ..data.bybit_ws import stream_klines

    owed = int(since_ms)
    limit = watchdog_s if watchdog_s is not None else watchdog_seconds(interval_ms)
    wait_ws = retry_ws_s
    while True:
        try:
            async with contextlib.aclosing(
                stream_klines(
                    client, symbol, interval, since_ms=owed, max_reconnects=max_reconnects, stats=stats
                )
            ) as stream:
                while True:
                    try:
                        candle = await asyncio.wait_for(anext(stream), timeout=limit)
                    except StopAsyncIteration:
                        return
                    except asyncio.TimeoutError:
                        log.warning(
                            "watchdog: no closed candle for %.1f s; checking REST and reconnecting the WebSocket",
                            limit,
                        )
                        try:
                            fresh = await in_thread(client.fetch_klines, symbol, interval, owed, None)
                        except BybitError as exc:
                            log.warning("watchdog REST check failed (%s)", exc)
                            fresh = []
                        for missed in fresh:
                            if missed.start_ms >= owed:
                                owed = missed.start_ms + interval_ms
                                yield missed
                        break
                    owed = candle.start_ms + interval_ms
                    wait_ws = retry_ws_s
                    yield candle
        except BybitError as exc:
            log.warning(
                "WebSocket unavailable (%s); falling back to REST polling every %.1f s, "
                "trying the WebSocket again in %.0f s",
                exc,
                poll_s,
                wait_ws,
            )
            async for candle in rest_polling(
                client,
                symbol,
                interval,
                interval_ms,
                since_ms=owed,
                poll_s=poll_s,
                until=time.monotonic() + wait_ws,
            ):
                owed = candle.start_ms + interval_ms
                yield candle
            wait_ws = min(max_retry_ws_s, wait_ws * 2)
        if on_reconnect is not None:
            on_reconnect()
