"""Opt-in real orders through Bybit's V5 private REST API (paper trading is the default).

- Keys come from the environment only (``BYBIT_API_KEY`` / ``BYBIT_API_SECRET``); they are never logged,
  printed or written to a file (:class:`Credentials` hides them in ``repr``).
- Requests are signed as Bybit's V5 spec says: ``X-BAPI-SIGN = hex(HMAC_SHA256(secret, timestamp +
  api_key + recv_window + payload))`` where the payload is the query string of a GET or the exact JSON
  body of a POST, sent with ``X-BAPI-API-KEY``, ``X-BAPI-TIMESTAMP`` and ``X-BAPI-RECV-WINDOW``.
- Testnet by default; mainnet needs an explicit ``base_url``.
- A max position guard refuses any order that would leave more than ``max_position_qty`` open.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx

from ..errors import UserError

log = logging.getLogger("convnext_fast.live.orders")

TESTNET_URL = "https://api-testnet.bybit.com"
MAINNET_URL = "https://api.bybit.com"
KEY_ENV, SECRET_ENV = "BYBIT_API_KEY", "BYBIT_API_SECRET"
DEFAULT_RECV_WINDOW_MS = 5000


class OrderError(UserError):
    """Bybit refused an order request, or the position guard did."""


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


class BybitOrders:
    """Market orders and position queries for one category (default ``linear``)."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        max_position_qty: float,
        base_url: str = TESTNET_URL,
        category: str = "linear",
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        timeout: float = 10.0,
        clock=time.time,
    ):
        if not max_position_qty > 0:
            raise UserError(f"--max-position must be > 0 (contracts), got {max_position_qty}")
        self.creds, self.max_position_qty = credentials, float(max_position_qty)
        self.base_url, self.category, self.recv_window_ms = (
            base_url.rstrip("/"),
            category,
            int(recv_window_ms),
        )
        self._clock = clock
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        if self.base_url == MAINNET_URL:
            log.warning("REAL ORDERS on Bybit MAINNET (%s)", self.base_url)

    def close(self) -> None:
        self._http.close()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _check(self, response: httpx.Response, what: str) -> dict:
        try:
            body = response.json()
        except ValueError:
            raise OrderError(f"Bybit {what}: HTTP {response.status_code}, not JSON") from None
        if response.status_code != 200 or body.get("retCode") != 0:
            raise OrderError(
                f"Bybit {what} refused: HTTP {response.status_code}, retCode {body.get('retCode')}: {body.get('retMsg')}"
            )
        return body.get("result") or {}

    def _get(self, path: str, params: dict) -> dict:
        query = urlencode(params)
        headers = signed_headers(
            self.creds, query, timestamp_ms=self._now_ms(), recv_window_ms=self.recv_window_ms
        )
        return self._check(self._http.get(f"{path}?{query}", headers=headers), path)

    def _post(self, path: str, body: dict) -> dict:
        text = json.dumps(body, separators=(",", ":"))  # the signed bytes are exactly the sent bytes
        headers = signed_headers(
            self.creds, text, timestamp_ms=self._now_ms(), recv_window_ms=self.recv_window_ms
        )
        headers["Content-Type"] = "application/json"
        return self._check(self._http.post(path, content=text, headers=headers), path)

    def position_qty(self, symbol: str) -> float:
        """Signed open size (short < 0) of ``symbol`` (one-way mode)."""
        result = self._get("/v5/position/list", {"category": self.category, "symbol": symbol})
        total = 0.0
        for row in result.get("list", []):
            size = float(row.get("size") or 0.0)
            total += size if row.get("side") == "Buy" else -size if row.get("side") == "Sell" else 0.0
        return total

    def market_order(self, symbol: str, qty: float, *, current_qty: float) -> dict:
        """Buy (qty > 0) or sell (qty < 0) at market, unless the result would exceed the position guard."""
        if qty == 0:
            raise OrderError("order quantity must be non-zero")
        after = current_qty + qty
        if abs(after) > self.max_position_qty + 1e-12:
            raise OrderError(
                f"position guard: {symbol} would hold {after:+g} after this order, above --max-position {self.max_position_qty:g}"
            )
        body = {
            "category": self.category,
            "symbol": symbol,
            "side": "Buy" if qty > 0 else "Sell",
            "orderType": "Market",
            "qty": f"{abs(qty):g}",
            "reduceOnly": abs(after) < abs(current_qty) and after * current_qty >= 0,
        }
        result = self._post("/v5/order/create", body)
        log.info(
            "order sent: %s %s %s (orderId %s)", body["side"], body["qty"], symbol, result.get("orderId")
        )
        return result


class OrderMirror:
    """Keeps the exchange position equal to the paper broker's intent: after each closed bar, the side the
    broker will hold from the next open, times a fixed ``qty`` per position."""

    def __init__(self, orders: BybitOrders, symbol: str, qty: float, *, close_on_hold: bool = False):
        if not qty > 0:
            raise UserError(f"--order-qty must be > 0 (contracts), got {qty}")
        self.orders, self.symbol, self.qty, self.close_on_hold = orders, symbol, float(qty), close_on_hold
        self.current = orders.position_qty(symbol)

    def target(self, pending_signal: int) -> float:
        side = (self.current > 0) - (self.current < 0)
        if pending_signal != 0 and pending_signal != side:
            return pending_signal * self.qty
        if pending_signal == 0 and self.close_on_hold:
            return 0.0
        return self.current

    def after_bar(self, pending_signal: int) -> dict | None:
        """Send the order that moves the exchange position to the target (None when already there)."""
        delta = self.target(pending_signal) - self.current
        if abs(delta) < 1e-12:
            return None
        result = self.orders.market_order(self.symbol, delta, current_qty=self.current)
        self.current += delta
        return result
