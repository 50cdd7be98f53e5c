"""Bybit V5 public kline stream that never misses or repeats a closed candle.

Closed candles are yielded in strictly increasing start order. Whenever the stream shows a candle later than
the next one owed (after a reconnect, or a dropped message), the missing closed candles are fetched through
REST first, so the consumer sees every closed candle exactly once and a partial candle only after all closed
candles before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import websockets
from websockets.asyncio.client import connect

from convnext_fast.data.bybit import BybitError, _check_symbol
from convnext_fast.data.candles import Candle, check_interval, format_ms, next_start_ms

if TYPE_CHECKING:
    from convnext_fast.data.bybit import BybitClient

log = logging.getLogger(__name__)
# A silent socket is declared dead after this many ping intervals without any message (pongs included).
_SILENCE_PINGS = 2.5
_CONNECTION_FAULTS = (OSError, asyncio.TimeoutError, websockets.WebSocketException)


async def stream_klines(
    client: BybitClient,
    symbol: str,
    interval: str | int,
    *,
    include_partial: bool = False,
    since_ms: int | None = None,
    max_reconnects: int | None = None,
) -> AsyncIterator[Candle]:
    """Yield :class:`Candle` records: every closed candle (``closed=True``) once, in order, and with
    ``include_partial`` also updates of the forming candle (``closed=False``, possibly many per candle).

    ``since_ms``: first candle start wanted; candles from there up to the live edge are backfilled through
    REST before live ones. Without it the stream starts at the first candle the socket reports.
    Reconnects forever with exponential backoff unless ``max_reconnects`` is given."""
    symbol, interval = _check_symbol(symbol), check_interval(interval)
    topic = f"kline.{interval}.{symbol}"
    owed = None if since_ms is None else int(since_ms)  # start of the next closed candle to yield

    async def catch_up(end_ms: int | None):
        nonlocal owed
        for missed in await _backfill(client, symbol, interval, owed, end_ms):
            owed = next_start_ms(missed.start_ms, interval)
            yield missed

    failures = 0
    while True:
        try:
            # aclosing: leaving the loop (consumer stops) closes the socket and the pinger right away.
            async with contextlib.aclosing(_connection(client, topic)) as updates:
                async for candle in updates:
                    if candle is None:  # (re)subscribed: first catch up on what closed meanwhile
                        failures = 0
                        if owed is not None:
                            async for missed in catch_up(None):
                                yield missed
                        continue
                    if owed is not None and candle.start_ms > owed:
                        async for missed in catch_up(candle.start_ms - 1):
                            yield missed
                    if owed is not None and candle.start_ms < owed:
                        continue  # already yielded as closed
                    if candle.closed:
                        owed = next_start_ms(candle.start_ms, interval)
                        yield candle
                    elif include_partial:
                        yield candle
        except _CONNECTION_FAULTS as exc:
            failures += 1
            if max_reconnects is not None and failures > max_reconnects:
                raise BybitError(
                    f"Bybit stream {topic} lost {failures} times in a row, last: {exc!r}"
                ) from exc
            delay = min(client.max_reconnect_delay, client.reconnect_delay * 2 ** (failures - 1))
            delay *= random.uniform(0.5, 1.0)
            log.warning("Bybit stream %s dropped (%r); reconnecting in %.2f s", topic, exc, delay)
            await asyncio.sleep(delay)


async def _connection(client: BybitClient, topic: str) -> AsyncIterator[Candle | None]:
    """One subscribed connection: None once subscribed, then its kline updates until it fails."""
    async with connect(client.ws_url, ping_interval=None, open_timeout=10) as ws:
        await _subscribe(ws, topic, client.ping_interval)
        pinger = asyncio.create_task(_ping_forever(ws, client.ping_interval))
        try:
            yield None
            async for candle in _kline_messages(ws, topic, client.ping_interval):
                yield candle
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger


async def _subscribe(ws, topic: str, ping_interval: float) -> None:
    await ws.send(json.dumps({"op": "subscribe", "args": [topic]}))
    while True:
        message = _decode(await asyncio.wait_for(ws.recv(), timeout=ping_interval * _SILENCE_PINGS), topic)
        if message.get("op") != "subscribe":
            continue
        if not message.get("success"):
            raise BybitError(f"Bybit refused subscription to {topic}: {message.get('ret_msg')!r}")
        return


async def _ping_forever(ws, interval: float) -> None:
    # Bybit drops public connections that send nothing for a while; it wants JSON pings, not WS frames.
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.sleep(interval)
            await ws.send(json.dumps({"op": "ping"}))


async def _kline_messages(ws, topic: str, ping_interval: float) -> AsyncIterator[Candle]:
    while True:
        message = _decode(await asyncio.wait_for(ws.recv(), timeout=ping_interval * _SILENCE_PINGS), topic)
        if message.get("topic") != topic:
            continue  # pongs and other control messages
        for item in message.get("data") or []:
            candle = _parse_ws_kline(item)
            if candle is None:
                # Any closed candle lost here is backfilled through REST when the next candle shows up.
                log.warning("Bybit stream %s: skipping malformed kline %r", topic, item)
                continue
            yield candle


def _decode(raw, topic: str) -> dict:
    try:
        message = json.loads(raw)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        log.warning("Bybit stream %s: skipping a message that is not a JSON object: %r", topic, raw[:200])
        return {}
    return message


def _parse_ws_kline(item) -> Candle | None:
    try:
        return Candle(
            int(item["start"]),
            *(float(item[k]) for k in ("open", "high", "low", "close", "volume", "turnover")),
            closed=bool(item["confirm"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


async def _backfill(client: BybitClient, symbol: str, interval: str, start_ms: int, end_ms: int | None):
    candles = await asyncio.to_thread(client.fetch_klines, symbol, interval, start_ms, end_ms)
    if end_ms is not None and (not len(candles) or next_start_ms(candles.start_ms[-1], interval) <= end_ms):
        # Exchange-side holes (maintenance) exist; REST is the authority, so move on and say so.
        log.warning(
            "Bybit %s %s: REST has no candles for part of %s .. %s",
            symbol,
            interval,
            format_ms(start_ms),
            format_ms(end_ms),
        )
    return list(candles)
