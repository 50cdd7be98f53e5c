"""A local fake of Bybit's V5 private REST API (and the public endpoints the order path reads) on
127.0.0.1, checking every signature and timestamp like the exchange, with injectable faults.

Faults (``fake.faults.append(name)``; each is consumed by the next ``/v5/order/create``):

- ``timeout_after_fill``: the order executes, the reply comes after the client's timeout.
- ``disconnect_after_fill``: the order executes, the connection closes without a reply.
- ``http_500_after_fill``: the order executes, the reply is HTTP 502.
- ``non_object``: the order executes, the reply is valid JSON that is not an object.
- ``lost``: the request is dropped before it executes (HTTP 503, nothing happens).
- ``stale_clock``: retCode 10002 (the server clock jumps; the client must resync once and retry).
- ``rate_limit``: retCode 10006 with ``X-Bapi-Limit-Reset-Timestamp`` a few ms ahead.
- ``partial``: only half of the quantity (on the step) fills.
- ``reject``: retCode 110007 (insufficient balance), nothing happens.
- ``external``: someone else trades the account (a new position within the guard), seen by the next
  position read.

The position carries the take-profit / stop-loss last set by ``/v5/position/trading-stop`` ("" when unset,
cleared when the position closes or flips, like Bybit's full-mode TP/SL). ``fake.drop_trading_stops = n``
makes the next ``n`` trading-stop calls close the connection without applying them (the client never
hears back: a process killed there would have left the position unprotected).

``python -m tests.live.fake_exchange`` prints the fault table (fault → orders sent / duplicates / final and
largest exchange position vs the guard) measured by :func:`run_fault_storm`.
"""

from __future__ import annotations

import hmac
import json
import random
import threading
import time
from collections import Counter
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from convnext_fast.live.exchange import Credentials, sign

FAULTS = (
    "timeout_after_fill",
    "disconnect_after_fill",
    "http_500_after_fill",
    "non_object",
    "lost",
    "stale_clock",
    "rate_limit",
    "partial",
    "reject",
    "external",
)


class FakeExchange:
    def __init__(
        self,
        creds: Credentials,
        *,
        symbol: str = "BTCUSDT",
        position: str = "0",
        qty_step: str = "0.001",
        min_qty: str = "0.001",
        max_qty: str = "100",
        tick: str = "0.1",
        min_notional: str = "5",
        price: float = 50_000.0,
        guard: Decimal | None = None,
        reply_delay_s: float = 0.25,
        funding: list[tuple[int, str]] | None = None,
        unique_link_ids: bool = True,
    ):
        self.creds, self.symbol = creds, symbol
        self.position, self.avg_price = Decimal(position), Decimal(0)
        self.qty_step, self.min_qty, self.max_qty = Decimal(qty_step), Decimal(min_qty), Decimal(max_qty)
        self.tick, self.min_notional, self.price = Decimal(tick), Decimal(min_notional), Decimal(str(price))
        self.guard, self.reply_delay_s = guard, reply_delay_s
        self.funding = funding or []
        # Bybit refuses a second order with the same orderLinkId; a fake that does not lets a test see
        # whether the client would ever send one.
        self.unique_link_ids = unique_link_ids
        self.executions: Counter[str] = Counter()
        self.faults: list[str] = []
        self.faults_hit: Counter[str] = Counter()
        self.resent = 0  # create requests for an orderLinkId that had already executed
        self._move_pending = False
        self.server_offset_ms = 0
        self.orders: dict[str, dict] = {}  # orderLinkId → order (only executed ones)
        self.create_requests: list[dict] = []  # every create body that passed the signature check
        self.bad_qty: list[str] = []  # quantity strings off the step or in exponent notation
        self.rejected_signatures = 0
        self.requests = 0
        self.trading_stops: list[dict] = []  # every trading-stop body applied
        self.take_profit = self.stop_loss = ""  # the position's protection, as position/list reports it
        self.drop_trading_stops = 0
        self.max_abs_position = abs(self.position)
        self.external_moves = 0
        # Called with the body of every executed order before its reply is sent (a test kills the client
        # there: the order is on the exchange, the client never heard of it).
        self.on_execute = None
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed ACK

            def handle_one_request(self):
                try:
                    super().handle_one_request()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout fault)
                    self.close_connection = True

            def log_message(self, *args):
                pass

            def _reply(self, body, status: int = 200, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _ok(self, result: dict) -> None:
                self._reply({"retCode": 0, "retMsg": "OK", "result": result, "time": fake.server_ms()})

            def _check(self, payload: str) -> str | None:
                """None when the request is authentic and on time; else the refusal already sent."""
                h = self.headers
                try:
                    ts, window = int(h["X-BAPI-TIMESTAMP"]), int(h["X-BAPI-RECV-WINDOW"])
                    want = sign(fake.creds.api_secret, ts, fake.creds.api_key, window, payload)
                    ok = h["X-BAPI-API-KEY"] == fake.creds.api_key and hmac.compare_digest(
                        h["X-BAPI-SIGN"], want
                    )
                except (KeyError, TypeError, ValueError):
                    ok = False
                if not ok:
                    fake.rejected_signatures += 1
                    self._reply({"retCode": 10004, "retMsg": "error sign!"})
                    return "sign"
                now = fake.server_ms()
                if not (now - window <= ts < now + 1000):  # Bybit's rule for the request time
                    self._reply(
                        {"retCode": 10002, "retMsg": "invalid request, please check your server timestamp"}
                    )
                    return "time"
                return None

            def do_GET(self):
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                with fake.lock:
                    fake.requests += 1
                if url.path == "/v5/market/time":
                    ms = fake.server_ms()
                    return self._ok({"timeSecond": str(ms // 1000), "timeNano": str(ms * 1_000_000)})
                if url.path == "/v5/market/instruments-info":
                    return self._ok({"list": [fake.instrument_row()]})
                if url.path == "/v5/market/orderbook":
                    bid, ask = fake.price - fake.tick, fake.price + fake.tick
                    return self._ok({"s": fake.symbol, "b": [[str(bid), "5"]], "a": [[str(ask), "5"]]})
                if url.path == "/v5/market/funding/history":
                    return self._ok(fake.funding_page(q))
                if self._check(url.query):
                    return
                if url.path == "/v5/position/list":
                    if fake._move_pending:
                        fake._move_pending = False
                        fake.move_outside()
                    with fake.lock:
                        pos, avg = fake.position, fake.avg_price
                        tp, sl = (fake.take_profit, fake.stop_loss) if pos else ("", "")
                    side = "Buy" if pos > 0 else "Sell" if pos < 0 else ""
                    row = {"symbol": fake.symbol, "side": side, "size": str(abs(pos)), "avgPrice": str(avg),
                           "takeProfit": tp, "stopLoss": sl}  # fmt: skip
                    return self._ok({"list": [row]})
                if url.path == "/v5/order/realtime":
                    order = fake.orders.get(q.get("orderLinkId", ""))
                    return self._ok({"list": [order] if order else []})
                self._reply({"retCode": 10001, "retMsg": f"unknown path {url.path}"}, 404)

            def do_POST(self):
                text = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with fake.lock:
                    fake.requests += 1
                if self._check(text):
                    return
                body = json.loads(text)
                path = urlsplit(self.path).path
                if path == "/v5/position/trading-stop":
                    with fake.lock:
                        drop = fake.drop_trading_stops > 0
                        fake.drop_trading_stops -= drop
                        if not drop:
                            fake.trading_stops.append(body)
                            fake.take_profit = body.get("takeProfit", fake.take_profit)
                            fake.stop_loss = body.get("stopLoss", fake.stop_loss)
                    if drop:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return None
                    return self._ok({})
                if path == "/v5/order/cancel":
                    return self._reply({"retCode": 110001, "retMsg": "order does not exist"})
                if path != "/v5/order/create":
                    return self._reply({"retCode": 10001, "retMsg": f"unknown path {path}"}, 404)
                self._create(body)

            def _create(self, body: dict) -> None:
                fault = fake.faults.pop(0) if fake.faults else None
                with fake.lock:
                    fake.create_requests.append(body)
                    fake.resent += fake.executions[body.get("orderLinkId")] > 0
                    if fault:
                        fake.faults_hit[fault] += 1
                if fault == "stale_clock":
                    fake.server_offset_ms += 3 * 60_000  # the server clock moved on: resync needed
                    return self._reply(
                        {"retCode": 10002, "retMsg": "invalid request, please check your server timestamp"}
                    )
                if fault == "rate_limit":
                    reset = fake.server_ms() - fake.server_offset_ms + 20
                    return self._reply({"retCode": 10006, "retMsg": "Too many visits!"},
                                       headers={"X-Bapi-Limit-Reset-Timestamp": str(reset)})  # fmt: skip
                if fault == "lost":
                    return self._reply({"error": "bad gateway"}, 503)
                if fault == "reject":
                    return self._reply({"retCode": 110007, "retMsg": "ab not enough for new order"})
                if fault == "external":
                    fake._move_pending = True
                code, msg = fake.execute(body, partial=fault == "partial")
                if code:
                    return self._reply({"retCode": code, "retMsg": msg})
                if fake.on_execute is not None:
                    fake.on_execute(body)
                result = {
                    "orderId": fake.orders[body["orderLinkId"]]["orderId"],
                    "orderLinkId": body["orderLinkId"],
                }
                if fault == "timeout_after_fill":
                    time.sleep(fake.reply_delay_s)
                    return self._ok(result)
                if fault == "disconnect_after_fill":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if fault == "http_500_after_fill":
                    return self._reply({"error": "upstream"}, 502)
                if fault == "non_object":
                    return self._reply(["ok", result])
                self._ok(result)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    # ---- exchange state ---------------------------------------------------------------------------------

    def server_ms(self) -> int:
        return int(time.time() * 1000) + self.server_offset_ms

    def instrument_row(self) -> dict:
        return {
            "symbol": self.symbol,
            "status": "Trading",
            "lotSizeFilter": {
                "qtyStep": str(self.qty_step),
                "minOrderQty": str(self.min_qty),
                "maxOrderQty": str(self.max_qty),
                "maxMktOrderQty": str(self.max_qty),
                "minNotionalValue": str(self.min_notional),
            },
            "priceFilter": {"tickSize": str(self.tick), "minPrice": "0.1", "maxPrice": "1999999"},
        }

    def execute(self, body: dict, *, partial: bool = False) -> tuple[int, str]:
        qty_text = body["qty"]
        with self.lock:
            link = body["orderLinkId"]
            if link in self.orders and self.unique_link_ids:
                return 110072, "OrderLinkedID is duplicate"
            if "e" in qty_text.lower():
                self.bad_qty.append(qty_text)
                return 10001, f"invalid qty {qty_text}"
            qty = Decimal(qty_text)
            if qty % self.qty_step != 0:
                self.bad_qty.append(qty_text)
                return 10001, f"qty {qty_text} is not a multiple of the qty step"
            if qty < self.min_qty or qty > self.max_qty:
                return 10001, f"qty {qty_text} outside [{self.min_qty}, {self.max_qty}]"
            sign_ = 1 if body["side"] == "Buy" else -1
            if body.get("reduceOnly") and not (self.position * sign_ < 0 and qty <= abs(self.position)):
                return 110017, "reduce-only order would increase the position"
            filled = qty if not partial else (qty / 2 // self.qty_step) * self.qty_step
            new = self.position + sign_ * filled
            if new == 0:
                self.avg_price = Decimal(0)
            elif self.position == 0 or (new > 0) != (self.position > 0):
                self.avg_price = self.price
            if new == 0 or (new > 0) != (self.position > 0):  # closed or flipped: the TP/SL go with it
                self.take_profit = self.stop_loss = ""
            self.position = new
            self.executions[link] += 1
            self.max_abs_position = max(self.max_abs_position, abs(new))
            self.orders[link] = {
                "orderId": f"id{sum(self.executions.values())}",
                "orderLinkId": link,
                "symbol": self.symbol,
                "side": body["side"],
                "qty": qty_text,
                "cumExecQty": str(filled),
                "avgPrice": str(self.price),
                "orderStatus": "Filled" if filled == qty else "PartiallyFilledCanceled",
            }
            return 0, "OK"

    def move_outside(self) -> None:
        """Someone else trades the account: a new position inside the guard (when one is set)."""
        with self.lock:
            limit = self.guard if self.guard is not None else Decimal(1)
            steps = int(limit / self.qty_step)
            self.position = random.randint(-steps, steps) * self.qty_step
            self.avg_price = self.price if self.position else Decimal(0)
            self.take_profit = self.stop_loss = ""
            self.max_abs_position = max(self.max_abs_position, abs(self.position))
            self.external_moves += 1

    def funding_page(self, q: dict) -> dict:
        start, end = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
        limit = int(q.get("limit", 200))
        rows = [(t, r) for t, r in self.funding if start <= t <= end]
        rows = sorted(rows, reverse=True)[:limit]  # newest first, like Bybit
        return {
            "category": "linear",
            "list": [
                {"symbol": self.symbol, "fundingRate": r, "fundingRateTimestamp": str(t)} for t, r in rows
            ],
        }

    def duplicates(self) -> int:
        """Orders executed beyond the first for one orderLinkId (one intent)."""
        return sum(n - 1 for n in self.executions.values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeExchange:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_fault_storm(
    creds, rng, *, n_bars: int = 160, fault_rate: float = 0.7, kinds=FAULTS, guard="0.05", min_faults: int = 0
):
    """Random decisions (side and Kelly-like size) for ``n_bars`` bars through :class:`OrderMirror`, a fault
    from ``kinds`` queued for the next order with probability ``fault_rate`` per bar. The fake executes a
    repeated orderLinkId, so any resend would show as a duplicate.

    A queued fault waits for the next request that can take it, and a bar whose decision needs no order
    sends none, so how many faults ``n_bars`` bars hit depends on the draw. ``min_faults`` runs on past
    ``n_bars`` (to at most 4x as many bars) until that many were hit."""
    from convnext_fast.live.orders import BybitExchange, OrderError, OrderMirror

    guard_qty = Decimal(guard)
    with FakeExchange(creds, guard=guard_qty, unique_link_ids=False, reply_delay_s=0.25) as fake:
        exchange = BybitExchange(creds, base_url=fake.url, timeout=0.1, sleep=lambda s: None)
        exchange.sync_time()
        mirror = OrderMirror(exchange, fake.symbol, 0.01, max_position=float(guard_qty), run_id="st0rm001")
        largest = Decimal(0)
        for k in range(4 * n_bars):
            if k >= n_bars and sum(fake.faults_hit.values()) >= min_faults:
                break
            if not fake.faults and rng.random() < fault_rate:  # at most one queued: every fault gets used
                fake.faults.append(str(rng.choice(kinds)))
            signal, size = int(rng.choice([-1, 0, 1])), float(rng.choice([0.5, 1.0, 2.5, 9.0]))
            try:
                mirror.after_bar(1_700_000_000_000 + k * 3_600_000, signal, pending_size=size)
            except OrderError:  # a refused read; the next bar reconciles
                pass
            largest = max(largest, fake.max_abs_position)
        exchange.close()
        return {
            "faults": sum(fake.faults_hit.values()),
            "intents": len({b["orderLinkId"] for b in fake.create_requests}),
            "orders_sent": len(fake.create_requests),
            "executed": sum(fake.executions.values()),
            "duplicates": fake.duplicates(),
            "resent_after_ambiguous": fake.resent,
            "bad_qty": len(fake.bad_qty),
            "rejected_signatures": fake.rejected_signatures,
            "final_position": fake.position,
            "max_abs_position": largest,
            "guard": guard_qty,
        }


if __name__ == "__main__":  # the fault table of the closing note
    import numpy as np

    creds = Credentials("fakeKEYfakeKEY1234", "fakeSECRETfakeSECRETfakeSECRET123456")
    rng = np.random.default_rng(0)
    print(
        "| fault | faults hit | intents | create requests | executed | duplicates | final pos | max abs pos | guard |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in (*FAULTS, "all mixed"):
        kinds = FAULTS if kind == "all mixed" else (kind,)
        r = run_fault_storm(
            creds, rng, n_bars=60 if kind != "all mixed" else 200, fault_rate=0.6, kinds=kinds
        )
        print(f"| {kind} | {r['faults']} | {r['intents']} | {r['orders_sent']} | {r['executed']} | {r['duplicates']} | "
              f"{r['final_position']} | {r['max_abs_position']} | {r['guard']} |")  # fmt: skip
