"""Bybit V5 public kline stream that never misses or repeats a closed candle.

Closed candles are yielded in strictly increasing start order. Whenever the stream shows a candle later than
the next one owed (after a reconnect, or a dropped message), the missing closed candles are fetched through
REST first, so the consumer sees every closed candle exactly once and a partial candle only after all closed
candles before it.

Every kline frame is checked against the schema and the one OHLCV rule (:mod:`convnext_fast.data.ohlcv`):
``data`` must be a list of objects with numeric fields, ``confirm`` a JSON boolean, ``start`` on an interval
boundary and no later than one interval past the server's clock. A frame that fails is dropped, counted in
:class:`StreamStats` and logged, never raised; a closed candle lost that way is backfilled through REST
when the next good one shows the hole.

Liveness: the client pings every ``ping_interval`` (default 10 s) and reconnects when no message at all (a
pong included) arrived for ``ping_interval + ping_timeout`` (default 10 + 10 s), so a stalled socket is found
within 20 s of its last message. Why these values: Bybit asks for a ping at least every 20 s, so 10 s keeps
a margin; a pong comes back in well under a second, so 10 s more cannot misfire on a slow but live link;
the former 20 s ping with 2.5 intervals of silence took ~50 s. ``data_timeout`` (off by default: a quiet
symbol may trade rarely) also reconnects a socket that answers pings but sends no klines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import websockets
from websockets.asyncio.client import connect

from convnext_fast.data.bybit_common import BybitError, digits_value
from convnext_fast.data.bybit_common import check_symbol as _check_symbol
from convnext_fast.data.candles import Candle, check_interval, format_ms, next_start_ms
from convnext_fast.data.ohlcv import bar_problem, time_problem

if TYPE_CHECKING:
    from convnext_fast.data.bybit import BybitClient

log = logging.getLogger(__name__)
_CONNECTION_FAULTS = (OSError, asyncio.TimeoutError, websockets.WebSocketException)
_PRICE_FIELDS = ("open", "high", "low", "close", "volume", "turnover")


@dataclass
class StreamStats:
    """Counters of one :func:`stream_klines` run, updated as it goes; the caller reads them (metrics)."""

    frames: int = 0  # kline items received
    rejected_frames: int = 0  # dropped by the schema / OHLCV / time checks
    closed_candles: int = 0  # closed candles yielded (live and backfilled)
    backfilled_candles: int = 0  # of those, fetched through REST
    reconnects: int = 0
    last_rejection: str = ""


class _StaleData(asyncio.TimeoutError):
    """The socket answers pings but has sent no kline for ``data_timeout`` seconds."""


async def stream_klines(
    client: BybitClient,
    symbol: str,
    interval: str | int,
    *,
    include_partial: bool = False,
    since_ms: int | None = None,
    max_reconnects: int | None = None,
    stats: StreamStats | None = None,
    data_timeout: float | None = None,
) -> AsyncIterator[Candle]:
    """Yield :class:`Candle` records: every closed candle (``closed=True``) once, in order, and with
    ``include_partial`` also updates of the forming candle (``closed=False``, possibly many per candle).

    ``since_ms``: first candle start wanted; candles from there up to the live edge are backfilled through
    REST before live ones. Without it the stream starts at the first candle the socket reports.
    Reconnects forever with exponential backoff unless ``max_reconnects`` is given. ``stats`` (optional)
    is kept up to date; ``data_timeout`` reconnects after that many seconds without any kline frame."""
    symbol, interval = _check_symbol(symbol), check_interval(interval)
    topic = f"kline.{interval}.{symbol}"
    owed = None if since_ms is None else int(since_ms)  # start of the next closed candle to yield
    stats = stats if stats is not None else StreamStats()
    clock = _ServerClock(client)

    async def catch_up(end_ms: int | None):
        nonlocal owed
        for missed in await _backfill(client, symbol, interval, owed, end_ms):
            owed = next_start_ms(missed.start_ms, interval)
            stats.closed_candles += 1
            stats.backfilled_candles += 1
            yield missed

    failures = 0
    while True:
        try:
            # aclosing: leaving the loop (consumer stops) closes the socket and the pinger right away.
            async with contextlib.aclosing(_connection(client, topic, data_timeout)) as updates:
                async for item in updates:
                    if item is None:  # (re)subscribed: first catch up on what closed meanwhile
                        failures = 0
                        if owed is not None:
                            async for missed in catch_up(None):
                                yield missed
                        continue
                    candle, problem = await _frame(item, interval, clock, stats)
                    if problem is not None:
                        # Any closed candle lost here is backfilled through REST when the next one shows up.
                        stats.rejected_frames += 1
                        stats.last_rejection = problem
                        log.warning(
                            "Bybit stream %s: rejected kline frame (%s): %.200r", topic, problem, item
                        )
                        continue
                    if owed is not None and candle.start_ms > owed:
                        async for missed in catch_up(candle.start_ms - 1):
                            yield missed
                    if owed is not None and candle.start_ms < owed:
                        continue  # already yielded as closed
                    if candle.closed:
                        owed = next_start_ms(candle.start_ms, interval)
                        stats.closed_candles += 1
                        yield candle
                    elif include_partial:
                        yield candle
        except _CONNECTION_FAULTS as exc:
            failures += 1
            stats.reconnects += 1
            await _back_off(client, topic, failures, max_reconnects, exc)


async def _frame(item, interval: str, clock, stats) -> tuple[Candle | None, str | None]:
    """Count one kline frame and parse it: ``(candle, None)`` or ``(candle or None, why it is rejected)``."""
    stats.frames += 1
    candle, problem = _parse_ws_kline(item, interval)
    if candle is not None:
        problem = await clock.start_problem(candle.start_ms, interval)
    return candle, problem


async def _back_off(
    client: BybitClient, label: str, failures: int, max_reconnects: int | None, exc: Exception
) -> None:
    """After the ``failures``-th drop in a row: give up past ``max_reconnects``, else sleep a jittered backoff."""
    if max_reconnects is not None and failures > max_reconnects:
        raise BybitError(f"Bybit stream {label} lost {failures} times in a row, last: {exc!r}") from exc
    delay = min(client.max_reconnect_delay, client.reconnect_delay * 2 ** (failures - 1))
    delay *= random.uniform(0.5, 1.0)
    log.warning("Bybit stream %s dropped (%r); reconnecting in %.2f s", label, exc, delay)
    await asyncio.sleep(delay)


async def _connection(client: BybitClient, topic: str, data_timeout: float | None) -> AsyncIterator:
    """One subscribed connection: None once subscribed, then its raw kline items until it fails."""
    async with connect(client.ws_url, ping_interval=None, open_timeout=10) as ws:
        silence = client.ping_interval + client.ping_timeout
        await _subscribe(ws, [topic], silence, topic)
        pinger = asyncio.create_task(_ping_forever(ws, client.ping_interval))
        try:
            yield None
            async for item in _kline_items(ws, topic, silence, data_timeout):
                yield item
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger


async def _subscribe(ws, args: list[str], silence: float, what) -> None:
    """Subscribe to ``args`` and wait for the ack; ``what`` names them in a refusal."""
    await ws.send(json.dumps({"op": "subscribe", "args": args}))
    while True:
        message = _decode(await asyncio.wait_for(ws.recv(), timeout=silence), args[0])
        if message.get("op") != "subscribe":
            continue
        if not message.get("success"):
            raise BybitError(f"Bybit refused subscription to {what}: {message.get('ret_msg')!r}")
        return


async def _ping_forever(ws, interval: float) -> None:
    # Bybit drops public connections that send nothing for a while; it wants JSON pings, not WS frames.
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.sleep(interval)
            await ws.send(json.dumps({"op": "ping"}))


async def _kline_items(ws, topic: str, silence: float, data_timeout: float | None) -> AsyncIterator:
    """Kline items of ``topic`` messages; a message whose ``data`` is not a list yields that ``data`` as
    one item, so the caller rejects and counts it like any other malformed frame."""
    last_kline = time.monotonic()
    while True:
        wait = silence
        if data_timeout is not None:
            wait = min(wait, max(0.0, last_kline + data_timeout - time.monotonic()))
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=wait)
        except asyncio.TimeoutError:
            if data_timeout is not None and time.monotonic() >= last_kline + data_timeout:
                raise _StaleData(f"no kline on {topic} for {data_timeout:g} s") from None
            raise
        message = _decode(raw, topic)
        if message.get("topic") != topic:
            continue  # pongs and other control messages
        last_kline = time.monotonic()
        data = message.get("data")
        for item in data if isinstance(data, list) else [data]:
            yield item


def _decode(raw, topic: str) -> dict:
    try:
        message = json.loads(raw)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        log.warning("Bybit stream %s: skipping a message that is not a JSON object: %r", topic, raw[:200])
        return {}
    return message


def _parse_ws_kline(item, interval: str) -> tuple[Candle | None, str | None]:
    """A kline item as a Candle, or why it is not one (schema, then the one OHLCV rule but for "how far in
    the future", which needs the server clock)."""
    if not isinstance(item, dict):
        return None, f"kline item is not an object but {type(item).__name__}"
    missing = [k for k in ("start", *_PRICE_FIELDS, "confirm") if k not in item]
    if missing:
        return None, f"kline item lacks {', '.join(missing)}"
    start = _whole_number(item["start"])
    if start is None:
        return None, f"non-numeric start: start={item['start']!r:.40} is not a whole number of epoch ms"
    values = {}
    for name in _PRICE_FIELDS:
        values[name] = _number(item[name])
        if values[name] is None:
            return None, f"non-numeric {name}: {name}={item[name]!r:.40}"
    if not isinstance(item["confirm"], bool):
        return None, f"confirm must be true or false, got {item['confirm']!r:.40}"
    problem = bar_problem(*values.values())
    if problem is not None:
        return None, problem
    return Candle(start, *values.values(), closed=item["confirm"]), None


def _whole_number(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return digits_value(value, 20)  # an epoch-ms start has 13 digits


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


class _ServerClock:
    """The server's now, learnt from REST ``/v5/market/time`` and advanced by the local monotonic clock; a
    start that looks too late refreshes it once before the frame is rejected (the server may have moved)."""

    def __init__(self, client: BybitClient):
        self.client = client
        self._server_ms: int | None = None
        self._at = 0.0

    def now_ms(self) -> int | None:
        if self._server_ms is None:
            return None
        return self._server_ms + int((time.monotonic() - self._at) * 1000)

    async def refresh(self) -> int:
        try:
            self._server_ms = await asyncio.to_thread(self.client.server_time_ms)
        except BybitError as exc:
            # Judging one frame is no reason to end the stream: the local clock is the fallback.
            log.warning("Bybit server time unavailable (%s); judging kline starts by the local clock", exc)
            self._server_ms = int(time.time() * 1000)
        self._at = time.monotonic()
        return self._server_ms

    async def start_problem(self, start_ms: int, interval: str) -> str | None:
        now = self.now_ms()
        problem = None if now is None else _start_problem(start_ms, interval, now)
        if now is None or problem is not None:
            problem = _start_problem(start_ms, interval, await self.refresh())
        return problem


def _start_problem(start_ms: int, interval: str, now_ms: int) -> str | None:
    # The forming candle starts at most one interval before now; a start past now + 1 interval is garbage.
    return time_problem(start_ms, interval, next_start_ms(now_ms, interval))


async def _backfill(client: BybitClient, symbol: str, interval: str, start_ms: int, end_ms: int | None):
    # The REST walk runs in a thread, which a task cancel (SIGTERM) cannot stop; the event can, between
    # requests, and fetch_klines bounds the walk by the window (never past the server's now) anyway.
    cancel = threading.Event()
    try:
        candles = await asyncio.to_thread(
            client.fetch_klines, symbol, interval, start_ms, end_ms, cancel=cancel
        )
    except asyncio.CancelledError:
        cancel.set()
        raise
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


# ---- many symbols on one connection --------------------------------------------------------------------
# Bybit caps the topics of one subscribe request (10 per request for public linear streams), not those of a
# connection, so a universe subscribes in chunks and waits for every acknowledgement.
SUBSCRIBE_CHUNK = 10


async def stream_klines_many(
    client: BybitClient,
    symbols: list[str],
    interval: str | int,
    *,
    since_ms: dict[str, int] | None = None,
    max_reconnects: int | None = None,
    stats: StreamStats | None = None,
) -> AsyncIterator[tuple[str, Candle]]:
    """:func:`stream_klines` for several symbols over ONE WebSocket connection with one
    ``kline.{interval}.{symbol}`` topic each: yields ``(symbol, closed candle)``, every closed candle of
    every symbol exactly once and in start order per symbol (the symbols interleave as the exchange sends
    them). Each symbol keeps its own next-candle-owed and backfills its own holes through REST, so a
    delayed or lost frame of one symbol never holds up or shifts the others. Partial candles are not
    yielded."""
    interval = check_interval(interval)
    symbols = [_check_symbol(s) for s in symbols]
    if len(set(symbols)) != len(symbols) or not symbols:
        raise ValueError(f"symbols must be distinct and at least one, got {symbols}")
    topics = {f"kline.{interval}.{s}": s for s in symbols}
    owed: dict[str, int | None] = {s: None for s in symbols}
    for s, ms in (since_ms or {}).items():
        owed[_check_symbol(s)] = int(ms)
    stats = stats if stats is not None else StreamStats()
    clock = _ServerClock(client)

    async def catch_up(symbol: str, end_ms: int | None):
        for missed in await _backfill(client, symbol, interval, owed[symbol], end_ms):
            owed[symbol] = next_start_ms(missed.start_ms, interval)
            stats.closed_candles += 1
            stats.backfilled_candles += 1
            yield symbol, missed

    failures = 0
    label = f"kline.{interval}.[{len(symbols)} symbols]"
    while True:
        try:
            async with contextlib.aclosing(_connection_many(client, list(topics))) as updates:
                async for topic, item in updates:
                    if topic is None:  # (re)subscribed: every symbol first catches up on what closed
                        failures = 0
                        for s in symbols:
                            if owed[s] is not None:
                                async for pair in catch_up(s, None):
                                    yield pair
                        continue
                    symbol = topics[topic]
                    candle, problem = await _frame(item, interval, clock, stats)
                    if problem is not None:
                        stats.rejected_frames += 1
                        stats.last_rejection = f"{symbol}: {problem}"
                        log.warning(
                            "Bybit stream %s: rejected kline frame (%s): %.200r", topic, problem, item
                        )
                        continue
                    if not candle.closed:
                        continue
                    if owed[symbol] is not None and candle.start_ms > owed[symbol]:
                        async for pair in catch_up(symbol, candle.start_ms - 1):
                            yield pair
                    if owed[symbol] is not None and candle.start_ms < owed[symbol]:
                        continue  # already yielded
                    owed[symbol] = next_start_ms(candle.start_ms, interval)
                    stats.closed_candles += 1
                    yield symbol, candle
        except _CONNECTION_FAULTS as exc:
            failures += 1
            stats.reconnects += 1
            await _back_off(client, label, failures, max_reconnects, exc)


async def _connection_many(client: BybitClient, topics: list[str]) -> AsyncIterator:
    """One connection subscribed to every topic: ``(None, None)`` once subscribed, then ``(topic, item)``
    for each kline item until it fails."""
    async with connect(client.ws_url, ping_interval=None, open_timeout=10) as ws:
        silence = client.ping_interval + client.ping_timeout
        for i in range(0, len(topics), SUBSCRIBE_CHUNK):
            chunk = topics[i : i + SUBSCRIBE_CHUNK]
            await _subscribe(ws, chunk, silence, chunk)
        pinger = asyncio.create_task(_ping_forever(ws, client.ping_interval))
        wanted = set(topics)
        try:
            yield None, None
            while True:
                message = _decode(await asyncio.wait_for(ws.recv(), timeout=silence), "kline")
                topic = message.get("topic")
                if topic not in wanted:
                    continue  # pongs and other control messages
                data = message.get("data")
                for item in data if isinstance(data, list) else [data]:
                    yield topic, item
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
