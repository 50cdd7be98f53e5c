"""Bybit V5 private REST: signing, server time, and every reply sorted into one of three outcomes.

- **Definite success** (``retCode`` 0): the result object.
- **Definite refusal** (any other ``retCode``, HTTP 4xx): :class:`OrderError`; nothing happened.
- **Ambiguous** (a timeout after the request left, HTTP 5xx, a reply that is not a JSON object):
  :class:`AmbiguousReply`; the order may exist. The caller must look it up by ``orderLinkId`` before
  doing anything else (see :meth:`BybitExchange.create_order`), never send it again.

Two refusals are fixed here and retried: ``10002`` (timestamp outside ``recv_window``: the server clock is
read again, once) and ``10006`` (rate limit: wait for ``X-Bapi-Limit-Reset-Timestamp``, as the public client
does). Both mean the request was rejected unprocessed, so retrying the same ``orderLinkId`` is safe.

Keys come from the environment only and are never logged, printed or written (``Credentials`` hides them
in ``repr``; request events carry the path, query and body, never headers).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlencode, urlsplit

import httpx

from ..data.bybit import _wait_until_reset
from ..data.bybit_common import digits_value
from ..errors import UserError
from .instruments import InstrumentRules, decimal_str, to_decimal

log = logging.getLogger("convnext_fast.live.orders")

TESTNET_URL = "https://api-testnet.bybit.com"
MAINNET_URL = "https://api.bybit.com"
KEY_ENV, SECRET_ENV = "BYBIT_API_KEY", "BYBIT_API_SECRET"
DEFAULT_RECV_WINDOW_MS = 5000
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DUPLICATE_LINK_CODES = {110072}  # "OrderLinkedID is duplicate": the intent already reached the exchange
MAX_RATE_LIMIT_WAITS = 5
MAX_READ_TRIES = 3  # reads (position, order lookup) are idempotent: an ambiguous one is simply asked again


class OrderError(UserError):
    """Bybit refused an order request, or a guard did."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class AmbiguousReply(OrderError):
    """The request may have been executed: timeout after sending, HTTP 5xx, or a reply that is not an
    object."""


@dataclass(frozen=True)
class Credentials:
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Credentials:
        key, secret = env.get(KEY_ENV, "").strip(), env.get(SECRET_ENV, "").strip()
        missing = [name for name, value in ((KEY_ENV, key), (SECRET_ENV, secret)) if not value]
        if missing:
            raise UserError(
                f"real orders need the API key in environment variables; {' and '.join(missing)} not set"
            )
        return cls(key, secret)

    def __repr__(self) -> str:
        return "Credentials(api_key=***, api_secret=***)"


def sign(api_secret: str, timestamp_ms: int, api_key: str, recv_window_ms: int, payload: str) -> str:
    """Bybit V5 HMAC signature (lower-case hex) of ``timestamp + api_key + recv_window + payload``."""
    message = f"{timestamp_ms}{api_key}{recv_window_ms}{payload}"
    return hmac.new(api_secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_headers(
    creds: Credentials, payload: str, *, timestamp_ms: int, recv_window_ms: int
) -> dict[str, str]:
    return {
        "X-BAPI-API-KEY": creds.api_key,
        "X-BAPI-TIMESTAMP": str(timestamp_ms),
        "X-BAPI-RECV-WINDOW": str(recv_window_ms),
        "X-BAPI-SIGN": sign(creds.api_secret, timestamp_ms, creds.api_key, recv_window_ms, payload),
    }


def check_order_url(url: str) -> str:
    """Order URLs must be https (the API key header would otherwise travel in cleartext), except loopback."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return url.rstrip("/")
    raise UserError(f"--orders-url must be https://... (http only for 127.0.0.1/localhost), got {url!r}")


@dataclass(frozen=True)
class Position:
    qty: Decimal  # signed: short < 0
    avg_price: Decimal | None
    # The exchange-side protection of the position: None when unset (Bybit sends "0" or "").
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None


def _epoch_ms(value, per_ms: int) -> int | None:
    """A whole, positive count of 1/per_ms milliseconds (a JSON integer or a string of ASCII digits) in
    epoch ms; None for anything else, so a garbled clock reply is an OrderError, not a crash."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    count = digits_value(str(value), 25)
    if count is None:
        return None
    ms = count // per_ms
    return ms if ms > 0 else None


def _list_of(result: dict, path: str) -> list:
    """``result.list`` of a read: a list (empty when absent). Anything else is an unreadable reply (as a body
    that is not a JSON object is), never mistaken for "no rows"."""
    rows = result.get("list")
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise AmbiguousReply(f"Bybit {path}: result.list is not a list but {str(rows)[:80]!r}")
    return rows


def _level(row: dict, key: str) -> Decimal | None:
    text = row.get(key)
    if text in (None, "", "0"):
        return None
    level = to_decimal(text, key)
    return level if level > 0 else None


class BybitExchange:
    """Signed V5 requests for one category. ``on_event(dict)`` receives every request and response (never
    a header); ``dry_run`` prints each signed request through ``on_event`` instead of sending it (public,
    unsigned reads such as the server time and instruments-info are still made)."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        base_url: str = TESTNET_URL,
        category: str = "linear",
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        dry_run: bool = False,
        on_event: Callable[[dict], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        self.creds = credentials
        self.base_url = check_order_url(base_url)
        self.category, self.recv_window_ms = category, int(recv_window_ms)
        if not 0 < self.recv_window_ms <= 60_000:
            raise UserError(f"--recv-window must be in 1..60000 ms, got {recv_window_ms}")
        self._clock, self._sleep = clock, sleep
        self.dry_run = dry_run
        self.on_event = on_event or (lambda record: None)
        self.offset_ms = 0  # server clock − local clock
        self._rules: dict[str, InstrumentRules] = {}
        # transport: httpx's injection point (tests answer from memory with httpx.MockTransport)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        if self.base_url == MAINNET_URL:
            log.warning("REAL ORDERS on Bybit MAINNET (%s)", self.base_url)

    def close(self) -> None:
        self._http.close()

    # ---- time -----------------------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000) + self.offset_ms

    def sync_time(self) -> int:
        """Measure the server clock offset from ``/v5/market/time`` (midpoint of the round trip)."""
        sent = self._clock()
        result, body = self._public("/v5/market/time", {})
        received = self._clock()
        server_ms = _epoch_ms(result.get("timeNano"), 1_000_000) or _epoch_ms(body.get("time"), 1)
        if server_ms is None:
            raise OrderError(f"Bybit /v5/market/time gave no usable time: {str(body)[:200]}")
        self.offset_ms = server_ms - int((sent + received) * 500)
        if abs(self.offset_ms) > self.recv_window_ms // 2:
            log.warning("local clock is %+d ms off Bybit's; requests use the server's time", -self.offset_ms)
        return self.offset_ms

    # ---- transport --------------------------------------------------------------------------------------

    def _public(self, path: str, params: dict) -> tuple[dict, dict]:
        for attempt in range(MAX_READ_TRIES):
            try:
                response = self._http.get(path, params=params)
                return self._parse(response, path)
            except AmbiguousReply:
                if attempt == MAX_READ_TRIES - 1:
                    raise
            except httpx.HTTPError as exc:
                if attempt == MAX_READ_TRIES - 1:
                    raise AmbiguousReply(f"Bybit {path}: {type(exc).__name__}") from None
            self._sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def _parse(self, response: httpx.Response, path: str) -> tuple[dict, dict]:
        status = response.status_code
        if status >= 500:
            raise AmbiguousReply(f"Bybit {path}: HTTP {status}")
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):  # valid JSON that is not an object is as unreadable as garbage
            if status != 200:
                raise OrderError(f"Bybit {path}: HTTP {status}")
            raise AmbiguousReply(f"Bybit {path}: HTTP {status}, the reply is not a JSON object")
        code = body.get("retCode")
        if status != 200 or code != 0:
            msg = f"Bybit {path} refused: HTTP {status}, retCode {code}: {body.get('retMsg')}"
            raise OrderError(msg, code if isinstance(code, int) else None)
        result = body.get("result")
        return (result if isinstance(result, dict) else {}), body

    def request(self, method: str, path: str, params: dict) -> dict | None:
        """One signed request (``params``: the query of a GET, the body of a POST). Returns the result
        object; None in dry-run. Raises :class:`OrderError` / :class:`AmbiguousReply`."""
        resynced, rate_waits = False, 0
        while True:
            if method == "GET":
                payload = urlencode(params)
            else:  # the signed bytes are exactly the sent bytes
                payload = json.dumps(params, separators=(",", ":"))
            ts = self.now_ms()
            headers = signed_headers(self.creds, payload, timestamp_ms=ts, recv_window_ms=self.recv_window_ms)
            if self.dry_run:
                shown = {**headers, "X-BAPI-API-KEY": "***"}  # the key never leaves the process
                url = f"{self.base_url}{path}" + (f"?{payload}" if method == "GET" else "")
                self.on_event(
                    {"event": "order_dry_run", "method": method, "url": url, "headers": shown,
                     "body": payload if method == "POST" else None}
                )  # fmt: skip
                return None
            self.on_event({"event": "order_request", "method": method, "path": path, "params": params})
            try:
                if method == "GET":
                    response = self._http.get(f"{path}?{payload}", headers=headers)
                else:
                    headers["Content-Type"] = "application/json"
                    response = self._http.post(path, content=payload, headers=headers)
            except httpx.ConnectError as exc:  # never reached the server: nothing happened
                raise OrderError(f"Bybit {path}: cannot connect ({exc})") from None
            except httpx.HTTPError as exc:  # sent, but no answer: it may have been executed
                self.on_event({"event": "order_response", "path": path, "error": type(exc).__name__})
                raise AmbiguousReply(f"Bybit {path}: {type(exc).__name__} after sending") from None
            try:
                result, body = self._parse(response, path)
            except OrderError as exc:
                self.on_event(
                    {
                        "event": "order_response",
                        "path": path,
                        "status": response.status_code,
                        "error": str(exc),
                    }
                )
                if exc.code == 10002 and not resynced:
                    resynced = True
                    log.warning("Bybit says the request time is outside recv_window; resyncing the clock")
                    self.sync_time()
                    continue
                if exc.code == 10006 and rate_waits < MAX_RATE_LIMIT_WAITS:
                    rate_waits += 1
                    wait = _wait_until_reset(response.headers)
                    self._sleep(1.0 if wait is None else wait)
                    continue
                raise
            self.on_event(
                {"event": "order_response", "path": path, "status": response.status_code, "body": body}
            )
            return result

    def _read(self, path: str, params: dict) -> dict | None:
        """A signed read, asked again when the reply was ambiguous (reads change nothing)."""
        for attempt in range(MAX_READ_TRIES):
            try:
                return self.request("GET", path, params)
            except AmbiguousReply:
                if attempt == MAX_READ_TRIES - 1:
                    raise
                self._sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    # ---- endpoints --------------------------------------------------------------------------------------

    def instrument(self, symbol: str) -> InstrumentRules:
        """Trading rules of ``symbol``, fetched once per run."""
        if symbol not in self._rules:
            result, _ = self._public(
                "/v5/market/instruments-info", {"category": self.category, "symbol": symbol}
            )
            rows = _list_of(result, "/v5/market/instruments-info")
            if not rows or not isinstance(rows[0], dict):
                raise OrderError(f"Bybit knows no {self.category} instrument {symbol!r}")
            self._rules[symbol] = InstrumentRules.from_info(rows[0])
        return self._rules[symbol]

    def best_bid_ask(self, symbol: str) -> tuple[Decimal, Decimal]:
        result, _ = self._public(
            "/v5/market/orderbook", {"category": self.category, "symbol": symbol, "limit": 1}
        )
        try:
            bid, ask = to_decimal(result["b"][0][0], "bid"), to_decimal(result["a"][0][0], "ask")
        except (KeyError, IndexError, TypeError, UserError):
            raise OrderError(
                f"Bybit order book for {symbol} is empty or unreadable: {str(result)[:200]}"
            ) from None
        if not (bid > 0 and ask > 0):
            raise OrderError(f"Bybit order book for {symbol} has a price <= 0: bid {bid}, ask {ask}")
        return bid, ask

    def position(self, symbol: str) -> Position | None:
        """Signed open size (one-way mode), its average entry price and the take-profit / stop-loss the
        exchange holds for it; None in dry-run."""
        result = self._read("/v5/position/list", {"category": self.category, "symbol": symbol})
        if result is None:
            return None
        total, avg, tp, sl = Decimal(0), None, None, None
        for row in _list_of(result, "/v5/position/list"):
            if not isinstance(row, dict) or row.get("symbol", symbol) != symbol:
                continue
            size = to_decimal(row.get("size") or "0", "position size")
            side = row.get("side")
            total += size if side == "Buy" else -size if side == "Sell" else 0
            if size:
                avg = _level(row, "avgPrice")
            if size:
                tp, sl = _level(row, "takeProfit"), _level(row, "stopLoss")
        return Position(total, avg, tp, sl)

    def query_order(self, symbol: str, link_id: str) -> dict | None:
        """The order with ``orderLinkId`` (``GET /v5/order/realtime``), or None when the exchange has none."""
        result = self._read(
            "/v5/order/realtime", {"category": self.category, "symbol": symbol, "orderLinkId": link_id}
        )
        rows = _list_of(result or {}, "/v5/order/realtime")
        return next((r for r in rows if isinstance(r, dict) and r.get("orderLinkId") == link_id), None)

    def create_order(self, body: dict) -> tuple[dict | None, str]:
        """Send ``body`` once. Returns ``(order, how)``: how is ``"sent"`` (order = create result),
        ``"found"`` (the reply was ambiguous or a duplicate, and the lookup by ``orderLinkId`` found it),
        ``"lost"`` (ambiguous, and the exchange has no such order: it is NOT sent again) or ``"dry_run"``."""
        link_id = body["orderLinkId"]
        try:
            result = self.request("POST", "/v5/order/create", body)
        except AmbiguousReply as exc:
            log.warning("order %s: %s; looking it up before anything else", link_id, exc)
        except OrderError as exc:
            if exc.code not in DUPLICATE_LINK_CODES:
                raise
            log.warning("order %s already reached the exchange; looking it up", link_id)
        else:
            return result, "sent" if result is not None else "dry_run"
        found = self.query_order(body["symbol"], link_id)
        return found, "found" if found is not None else "lost"

    def cancel_order(self, symbol: str, link_id: str) -> None:
        try:
            self.request(
                "POST",
                "/v5/order/cancel",
                {"category": self.category, "symbol": symbol, "orderLinkId": link_id},
            )
        except OrderError as exc:  # already filled or gone: the position read after says what happened
            log.info("cancel %s: %s", link_id, exc)

    def trading_stop(self, symbol: str, *, take_profit: Decimal | None, stop_loss: Decimal | None) -> None:
        """Attach take-profit / stop-loss to the whole position on the exchange (market fills when hit), so
        it stays protected if this process dies."""
        body = {"category": self.category, "symbol": symbol, "tpslMode": "Full", "positionIdx": 0}
        if take_profit is not None:
            body |= {"takeProfit": decimal_str(take_profit), "tpTriggerBy": "LastPrice"}
        if stop_loss is not None:
            body |= {"stopLoss": decimal_str(stop_loss), "slTriggerBy": "LastPrice"}
        self.request("POST", "/v5/position/trading-stop", body)
