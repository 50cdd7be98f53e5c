"""A local fake of Bybit's V5 public market data (REST klines + WebSocket kline stream) for tests.

One ``websockets`` server on 127.0.0.1 answers both: plain HTTP GETs get REST responses, upgrade requests
become stream connections. It runs its own event loop in a background thread, so synchronous and async tests
can both use it::

    with FakeBybit(candles, symbol="BTCUSDT", interval="60") as fake:
        client = BybitClient(fake.rest_url, fake.ws_url)
        fake.queue_fault("http", status=503)      # the next REST request gets HTTP 503
        fake.push_candle(candle)                  # closed candle to stream subscribers and to REST
        fake.drop_connections()                   # cut every stream connection

Everything it sends follows Bybit's wire format: kline rows newest-first as 7 strings in the
``retCode/retMsg/result/retExtInfo/time`` envelope; stream messages ``{topic, type, ts, data:[...]}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response

from convnext_fast.data.candles import Candle, Candles, check_interval, interval_to_ms, next_start_ms

REST_FAULTS = (
    "http",
    "retcode",
    "rate_limit",
    "slow",
    "malformed_json",
    "duplicate_rows",
    "shuffle_rows",
    "bad_row",
    "bad_time",
)


@dataclass
class _Fault:
    kind: str
    options: dict = field(default_factory=dict)


def _num(x: float) -> str:
    return repr(float(x))


def random_candles(
    rng: np.random.Generator, n: int, interval: str = "60", *, end_ms: int | None = None
) -> Candles:
    """``n`` consistent random-walk candles ending (closing) at ``end_ms`` (default: the last interval
    boundary at least a day in the past), with turnover, so fetch tests can compare exactly."""
    step = interval_to_ms(interval)
    end_ms = end_ms if end_ms is not None else (int(time.time() * 1000) - 86_400_000) // step * step
    start = end_ms - n * step + step * np.arange(n, dtype=np.int64)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[close[0] * (1 + rng.normal(0, 0.005))], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, n)))
    volume = rng.gamma(2.0, 50.0, n)
    turnover = volume * (open_ + close) / 2
    return Candles(start, open_, high, low, close, volume, turnover)


def served(c: Candle) -> Candle:
    """The candle as the fake sends it: Bybit always has turnover, so a missing one becomes volume · close."""
    return c if c.turnover == c.turnover else c._replace(turnover=c.volume * c.close)


def kline_row(c: Candle) -> list[str]:
    """One REST kline row as Bybit sends it."""
    c = served(c)
    return [str(int(c.start_ms)), *(_num(v) for v in (c.open, c.high, c.low, c.close, c.volume, c.turnover))]


class FakeBybit:
    """Serves ``candles`` for one (category, symbol, interval), and REST klines of ``more_symbols``
    ({symbol: candles}, same category and interval; the stream stays ``symbol``'s); anything else gets
    retCode 10001. ``request_times`` holds the arrival (``time.time()``) of every HTTP request.

    ``now_ms`` is the server clock reported in responses: the candle containing it is still forming and
    appears in REST output like on Bybit (default: just after the last candle closed)."""

    def __init__(
        self,
        candles: Candles,
        *,
        symbol: str = "BTCUSDT",
        interval: str = "60",
        category: str = "linear",
        now_ms: int | None = None,
        more_symbols: dict[str, Candles] | None = None,
    ):
        self.symbol, self.interval, self.category = symbol, check_interval(interval), category
        self.more_symbols = dict(more_symbols or {})
        self.request_times: list[float] = []
        self._candles = candles
        self.now_ms = (
            now_ms
            if now_ms is not None
            else (
                next_start_ms(candles.start_ms[-1], self.interval)
                if len(candles)
                else int(time.time() * 1000)
            )
        )
        self.requests: list[dict] = []  # query params of every kline request, plus "t" (monotonic seconds)
        self.time_requests = 0  # GET /v5/market/time calls
        self.funding_requests: list[dict] = []  # query params of every funding-history request
        # Persistent misbehaviour (see set_page_rows / set_stuck / set_clock_skew):
        self.page_rows: int | None = None  # serve at most this many rows per kline page, whatever `limit` is
        self.stuck_params: dict | None = None  # when set, every kline request is answered for these params
        self.clock_skew_ms = 0  # added to the clock this server reports (its candles stay where they are)
        self.pings = 0
        self.subscribe_count = 0
        self._faults: deque[_Fault] = deque()
        self._time_faults: deque[_Fault] = deque()
        self._subscribers: set = set()
        self._connections: set = set()
        self._muted: dict = {}  # connection -> still answers pings? (see mute_connections)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FakeBybit:
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve(ready)), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Bybit server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeBybit:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v5/public/{self.category}"

    @property
    def candles(self) -> Candles:
        with self._lock:
            return self._candles

    # ---- test controls -------------------------------------------------------------------------------

    def queue_fault(self, kind: str, count: int = 1, **options) -> None:
        """Apply ``kind`` to the next ``count`` REST requests, in queue order. Kinds and options:
        ``http`` (status=500), ``retcode`` (code=10000, msg), ``rate_limit`` (retCode 10006 with
        X-Bapi-Limit-Reset-Timestamp reset_after_ms=50 ahead), ``slow`` (delay seconds, then a normal
        answer), ``malformed_json``, ``duplicate_rows``, ``shuffle_rows`` (correct rows in random order),
        ``bad_row`` (row index `row`=0, variant="short"|"text"|"time_text"|"zero"|"negative"|"high_low"|
        "spike"), ``bad_time`` (the envelope's ``time`` is "abc"). With ``endpoint="time"`` the fault hits
        the next ``GET /v5/market/time`` calls instead of kline requests."""
        if kind not in REST_FAULTS:
            raise ValueError(f"unknown fault {kind!r}; use one of {REST_FAULTS}")
        endpoint = options.pop("endpoint", "kline")
        with self._lock:
            queue = self._time_faults if endpoint == "time" else self._faults
            queue.extend(_Fault(kind, options) for _ in range(count))

    def set_page_rows(self, rows: int | None) -> None:
        """Serve at most ``rows`` rows per kline page (the newest ones of the window), whatever ``limit``."""
        self.page_rows = rows

    def set_stuck(self, stuck: bool = True) -> None:
        """A pagination that never advances: every kline request from now on gets the page of the first."""
        self.stuck_params = {} if stuck else None

    def set_clock_skew(self, skew_ms: int) -> None:
        """Report a clock ``skew_ms`` ahead of ``now_ms`` (a server clock ahead of the client's)."""
        self.clock_skew_ms = int(skew_ms)

    def set_now(self, now_ms: int) -> None:
        with self._lock:
            self.now_ms = int(now_ms)

    def push_candle(self, candle: Candle, *, confirm: bool = True, deliver: bool = True) -> None:
        """Publish a kline update. A confirmed candle also joins the REST data and moves the clock to its
        close; ``deliver=False`` skips the stream (a message the client never got)."""
        if confirm:
            with self._lock:
                self._candles = Candles.concat([self._candles, Candles.from_rows([candle])])
                self.now_ms = max(self.now_ms, next_start_ms(candle.start_ms, self.interval))
        if deliver:
            self.push_message(self._kline_message(candle, confirm))

    def push_message(self, message: dict | str) -> None:
        """Send a raw message (dict as JSON, or text as is) to every subscribed stream client."""
        text = message if isinstance(message, str) else json.dumps(message)
        self._call(self._broadcast(text))

    def drop_connections(self) -> None:
        """Close every stream connection abruptly, as a network drop would."""
        self._call(self._drop_all())

    def mute_connections(self, *, answer_pings: bool = False) -> None:
        """Leave every current stream connection open but silent: no klines reach it, and unless
        ``answer_pings`` its pings go unanswered too (a stalled socket). New connections are normal."""
        self._call(self._mute_all(answer_pings))

    def wait_for_subscribers(self, n: int = 1, timeout: float = 30.0) -> None:
        """Block until ``n`` stream clients are subscribed. The default is generous on purpose: a client
        (re)subscribes only when its event loop is free, and a live loop's first candle can hold that loop
        for many seconds (numba compiles the paper broker on first use; longer with a cold cache on a loaded
        machine). A 5 s default made the WebSocket drop test flaky; waiting longer costs nothing when the
        client is quick."""
        deadline = time.monotonic() + timeout
        while len(self._subscribers) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake Bybit: {len(self._subscribers)} stream subscribers, waited for {n}")
            time.sleep(0.005)

    # ---- server --------------------------------------------------------------------------------------

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _serve(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._stream, "127.0.0.1", 0, process_request=self._http) as server:
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await self._stop.wait()

    async def _http(self, connection, request):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        url = urlsplit(request.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self._lock:
            self.request_times.append(time.time())
        if url.path == "/v5/market/time":
            with self._lock:
                self.time_requests += 1
                fault = self._time_faults.popleft() if self._time_faults else None
            return self._time(fault)
        if url.path == "/v5/market/funding/history":
            with self._lock:
                self.funding_requests.append(params)
            return self._funding(params)
        with self._lock:
            self.requests.append({**params, "t": time.monotonic()})
            fault = self._faults.popleft() if self._faults else None
        if url.path != "/v5/market/kline":
            return _response(404, b"not found")
        kind, opt = (fault.kind, fault.options) if fault else (None, {})
        if kind == "slow":
            await asyncio.sleep(opt.get("delay", 1.0))
        if kind == "http":
            return _response(opt.get("status", 500), b"<html>error</html>")
        if kind == "malformed_json":
            return _response(200, b'{"retCode":0,"retMsg":"OK","result":{"list":[["17')
        if kind == "retcode":
            return self._envelope(opt.get("code", 10000), opt.get("msg", "Server Timeout"), {})
        if kind == "bad_time":
            return self._klines(params, None, opt, time_field="abc")
        if kind == "rate_limit":
            reset = int(time.time() * 1000) + int(opt.get("reset_after_ms", 50))
            headers = {"X-Bapi-Limit-Reset-Timestamp": str(reset), "X-Bapi-Limit-Status": "0"}
            return self._envelope(10006, "Too many visits!", {}, headers)
        return self._klines(params, kind, opt)

    def _time(self, fault: _Fault | None):
        kind, opt = (fault.kind, fault.options) if fault else (None, {})
        if kind == "http":
            return _response(opt.get("status", 500), b"<html>error</html>")
        if kind == "retcode":
            return self._envelope(opt.get("code", 10000), opt.get("msg", "Server Timeout"), {})
        now = self.now_ms + self.clock_skew_ms
        result = {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}
        if kind == "bad_time":
            result = {"timeSecond": "abc", "timeNano": "abc"}
            return self._envelope(0, "OK", result, time_field="abc")
        return self._envelope(0, "OK", result)

    def _klines(self, params: dict, kind: str | None, opt: dict, time_field=None):
        for name in ("category", "symbol", "interval"):
            if name not in params:
                return self._envelope(10001, f"params error: {name} is required", {})
        symbol = params["symbol"]
        if params["category"] != self.category or symbol not in (self.symbol, *self.more_symbols):
            return self._envelope(10001, "Not supported symbols", {})
        if params["interval"] != self.interval:
            return self._envelope(10001, "Invalid period!", {})
        limit = int(params.get("limit", 200))
        if not 1 <= limit <= 1000:
            return self._envelope(10001, "params error: limit", {})
        with self._lock:
            candles = self._candles if symbol == self.symbol else self.more_symbols[symbol]
            now = self.now_ms + self.clock_skew_ms
            if self.stuck_params is not None:
                self.stuck_params = self.stuck_params or dict(params)
                params = self.stuck_params
        start, end = int(params.get("start", 0)), int(params.get("end", now))
        keep = (candles.start_ms >= start) & (candles.start_ms <= min(end, now))
        rows = [kline_row(c) for c in candles[keep]][::-1][: min(limit, self.page_rows or limit)]
        if kind == "duplicate_rows" and rows:
            rows = rows + random.sample(rows, k=max(1, len(rows) // 3))
        if kind in ("duplicate_rows", "shuffle_rows"):
            random.shuffle(rows)
        if kind == "bad_row" and rows:
            i = opt.get("row", 0)
            rows[i] = _broken_row(rows[i], opt.get("variant", "short"))
        result = {"symbol": symbol, "category": self.category, "list": rows}
        return self._envelope(0, "OK", result, time_field=time_field)

    FUNDING_EVERY_MS = 8 * 3_600_000

    def _funding(self, params: dict):
        """Bybit's funding history: a settlement every 8 h over the candles' span (a deterministic rate per
        time), the newest ``limit`` (<= 200) of those in [startTime, endTime] that settled by now, newest
        first."""
        if params.get("category") != self.category or params.get("symbol") != self.symbol:
            return self._envelope(10001, "Not supported symbols", {})
        limit = int(params.get("limit", 200))
        if not 1 <= limit <= 200:
            return self._envelope(10001, "params error: limit", {})
        with self._lock:
            now = self.now_ms + self.clock_skew_ms
        step, first = self.FUNDING_EVERY_MS, int(self._candles.start_ms[0]) if len(self._candles) else now
        start = max(int(params.get("startTime", first)), first)
        end = min(int(params.get("endTime", now)), now)
        times = range(end // step * step, (start + step - 1) // step * step - 1, -step)[:limit]
        rows = [
            {
                "symbol": self.symbol,
                "fundingRate": f"{1e-4 * (1 + math.sin(t / step)):.8f}",
                "fundingRateTimestamp": str(t),
            }
            for t in times
        ]
        return self._envelope(0, "OK", {"category": self.category, "list": rows})

    def _envelope(self, code: int, msg: str, result: dict, headers: dict | None = None, time_field=None):
        now = self.now_ms + self.clock_skew_ms if time_field is None else time_field
        body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now}
        return _response(200, json.dumps(body).encode(), headers)

    _PONG = json.dumps({"success": True, "ret_msg": "pong", "conn_id": "fake", "op": "ping"})

    def _subscription(self, category: str, message: dict) -> tuple[bool, dict]:
        """Whether a subscribe request is accepted, and the reply to it."""
        ok = category == self.category and message.get("args") == [f"kline.{self.interval}.{self.symbol}"]
        reply = {
            "success": ok,
            "ret_msg": "" if ok else f"error:handler not found,topic:{message.get('args')}",
            "conn_id": "fake",
            "req_id": "",
            "op": "subscribe",
        }
        return ok, reply

    async def _stream(self, ws) -> None:
        self._connections.add(ws)
        category = ws.request.path.rstrip("/").rsplit("/", 1)[-1]
        try:
            async for raw in ws:
                message = json.loads(raw)
                op = message.get("op")
                if op == "ping":
                    self.pings += 1
                    if ws in self._muted and not self._muted[ws]:
                        continue
                    await ws.send(self._PONG)
                elif op == "subscribe":
                    ok, reply = self._subscription(category, message)
                    await ws.send(json.dumps(reply))
                    if ok:
                        self.subscribe_count += 1
                        self._subscribers.add(ws)
        except ConnectionClosed:
            pass  # dropped clients are the point of some tests
        finally:
            self._connections.discard(ws)
            self._subscribers.discard(ws)
            self._muted.pop(ws, None)

    async def _mute_all(self, answer_pings: bool) -> None:
        for ws in list(self._connections):
            self._muted[ws] = answer_pings
            self._subscribers.discard(ws)

    async def _broadcast(self, text: str) -> None:
        for ws in list(self._subscribers):
            try:
                await ws.send(text)
            except ConnectionClosed:  # a client that vanished mid-send just misses the message
                self._subscribers.discard(ws)

    async def _drop_all(self) -> None:
        for ws in list(self._connections):
            self._subscribers.discard(ws)
            ws.transport.abort()
        self._connections.clear()

    def _kline_message(self, c: Candle, confirm: bool) -> dict:
        c = served(c)
        item = {
            "start": int(c.start_ms),
            "end": next_start_ms(c.start_ms, self.interval) - 1,
            "interval": self.interval,
            **{k: _num(getattr(c, k)) for k in ("open", "close", "high", "low", "volume", "turnover")},
            "confirm": confirm,
            "timestamp": self.now_ms,
        }
        return {
            "topic": f"kline.{self.interval}.{self.symbol}",
            "data": [item],
            "ts": self.now_ms,
            "type": "snapshot",
        }


def _broken_row(row: list[str], variant: str) -> list[str]:
    """One REST row damaged the way ``bad_row`` says (row = start, open, high, low, close, volume, turnover)."""
    start, o, h, lo, c, v, q = row
    if variant == "short":
        return row[:5]
    if variant == "text":
        return [start, o, h, lo, "abc", v, q]
    if variant == "time_text":
        return ["abc", o, h, lo, c, v, q]
    if variant == "zero":
        return [start, "0", h, "0", c, v, q]
    if variant == "negative":
        return [start, o, h, _num(-float(lo)), c, v, q]
    if variant == "high_low":  # high < low: the extremes swapped
        return [start, o, lo, h, c, v, q]
    if variant == "spike":
        return [start, o, "1e50", lo, c, v, q]
    raise ValueError(f"unknown bad_row variant {variant!r}")


def _response(status: int, body: bytes, headers: dict | None = None) -> Response:
    # Connection: close because this server answers one HTTP request per connection.
    all_headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    reason = {200: "OK", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}.get(status, "Error")
    return Response(status, reason, Headers({**all_headers, **(headers or {})}), body)


# ---- several symbols (live universe, branch liveN) -----------------------------------------------------
# Kept apart from FakeBybit so the "universe" helper's own multi-symbol extension merges without conflict.
class FakeBybitMany(FakeBybit):
    """FakeBybit serving several symbols of one interval: REST answers each symbol from its own series and
    one stream connection may subscribe to several ``kline.{interval}.{symbol}`` topics in one request.
    ``push_candle(candle, symbol=...)`` publishes to that symbol's topic."""

    def __init__(self, series: dict[str, Candles], *, interval: str = "60", category: str = "linear"):
        first = next(iter(series))
        ends = [next_start_ms(c.start_ms[-1], interval) for c in series.values() if len(c)]
        super().__init__(series[first], symbol=first, interval=interval, category=category, now_ms=max(ends))
        # Unstarted single-symbol fakes hold each series and build its REST page and stream message.
        self.books = {
            s: FakeBybit(c, symbol=s, interval=interval, category=category) for s, c in series.items()
        }

    def push_candle(self, candle: Candle, *, symbol: str | None = None, confirm=True, deliver=True) -> None:
        book = self.books[symbol or self.symbol]
        if confirm:
            with self._lock:
                book._candles = Candles.concat([book._candles, Candles.from_rows([candle])])
                self.now_ms = max(self.now_ms, next_start_ms(candle.start_ms, self.interval))
        if deliver:
            book.now_ms = self.now_ms
            self.push_message(book._kline_message(candle, confirm))

    def _klines(self, params: dict, kind, opt: dict, time_field=None):
        book = self.books.get(params.get("symbol"))
        if book is None:
            return self._envelope(10001, "Not supported symbols", {})
        book.now_ms, book.clock_skew_ms, book.page_rows = self.now_ms, self.clock_skew_ms, self.page_rows
        return book._klines(params, kind, opt, time_field)

    _PONG = json.dumps({"success": True, "ret_msg": "pong", "op": "ping"})

    def _subscription(self, category: str, message: dict) -> tuple[bool, dict]:
        known = {f"kline.{self.interval}.{s}" for s in self.books}
        args = message.get("args") or []
        ok = category == self.category and bool(args) and set(args) <= known and len(args) <= 10
        return ok, {"success": ok, "ret_msg": "" if ok else f"error:topic:{args}", "op": "subscribe"}
