"""Where closed candles come from: Bybit WebSocket (with REST polling as the fallback) or a replay of
stored candles (the candle store or a CSV), at full speed or paced with ``speed``.

Every source is an async iterator of closed :class:`~convnext_fast.data.candles.Candle` records in start
order; the loop still guards against duplicates, disorder and gaps, so a misbehaving source cannot
double-count a candle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from ..data.bybit import BybitError
from ..data.candles import Candle, Candles

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
    client, symbol: str, interval: str, interval_ms: int, *, since_ms: int, poll_s: float = 5.0
) -> AsyncIterator[Candle]:
    """Poll ``fetch_klines`` for closed candles from ``since_ms`` on; network faults back off and retry."""
    owed, failures = int(since_ms), 0
    while True:
        try:
            fresh = await asyncio.to_thread(client.fetch_klines, symbol, interval, owed, None)
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


async def websocket_with_fallback(
    client,
    symbol: str,
    interval: str,
    interval_ms: int,
    *,
    since_ms: int,
    max_reconnects: int = 5,
    poll_s: float = 5.0,
) -> AsyncIterator[Candle]:
    """The Bybit kline WebSocket (which reconnects with backoff and backfills its own gaps); after
    ``max_reconnects`` failures in a row, REST polling from the next candle owed."""
    from ..data.bybit_ws import stream_klines

    owed = int(since_ms)
    try:
        async for candle in stream_klines(
            client, symbol, interval, since_ms=owed, max_reconnects=max_reconnects
        ):
            owed = candle.start_ms + interval_ms
            yield candle
    except BybitError as exc:
        log.warning("WebSocket unavailable (%s); falling back to REST polling every %.1f s", exc, poll_s)
    async for candle in rest_polling(client, symbol, interval, interval_ms, since_ms=owed, poll_s=poll_s):
        yield candle
