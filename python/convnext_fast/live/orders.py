"""Opt-in real orders on Bybit V5 that mirror the paper broker's intent (paper trading is the default).

One closed bar → at most one order, made safe in four ways:

- **Idempotent.** Each order carries a deterministic ``orderLinkId`` = (run id, bar start, intent). When the
  reply is ambiguous (timeout, 5xx, unreadable) the order is looked up by that id before anything else and
  is never sent a second time (:meth:`BybitExchange.create_order`); a resumed run re-deriving the same id is
  refused by the exchange as a duplicate and looked up the same way.
- **Reconciled.** The exchange position is read before each decision and after each order; the guard and
  the target use the exchange's figure; every difference from what was expected is a warning and a
  ``reconcile`` JSON-line event.
- **On the exchange's grid.** Quantities and prices are decimal strings on the instrument's qty step and
  tick size; an order below the minimum is skipped with a logged reason.
- **Guarded.** ``max_position`` caps the exchange position; a kill switch (max daily loss, max orders per
  hour) flattens and stops the run. Stop-loss / take-profit are attached on the exchange with the
  backtest's distances from the actual fill, so a crash of this process leaves the position protected;
  every reconcile (resume, before each decision, after each order) re-attaches them from the position's
  average price when the exchange reports a non-zero position without them (a crash between the fill and
  ``/v5/position/trading-stop``, or a refused trading-stop call).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from ..errors import UserError
from .exchange import (
    MAINNET_URL,
    TESTNET_URL,
    AmbiguousReply,
    BybitExchange,
    Credentials,
    OrderError,
    Position,
    check_order_url,
    sign,
    signed_headers,
)
from .instruments import decimal_str, round_to_step, to_decimal

__all__ = [
    "MAINNET_URL", "TESTNET_URL", "AmbiguousReply", "BybitExchange", "Credentials", "KillSwitch",
    "KillSwitchTripped", "OrderError", "OrderMirror", "Position", "check_order_url", "link_id", "run_id_for",
    "sign", "signed_headers",
]  # fmt: skip

log = logging.getLogger("convnext_fast.live.orders")
MAX_LINK_ID = 36  # Bybit's limit on orderLinkId
DAY_MS = 86_400_000
INTENTS = ("open", "close", "flip", "reduce", "kill")  # the last part of an orderLinkId


class KillSwitchTripped(UserError):
    """The kill switch flattened the position and stopped the run."""


def run_id_for(*parts: object) -> str:
    """A stable 8-hex-digit run id from what identifies a run (symbol, interval, state file ...): a resumed
    run derives the same one, so a bar's order keeps its ``orderLinkId`` across restarts."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8]


def link_id(run_id: str, bar_start_ms: int, intent: str) -> str:
    """Deterministic ``orderLinkId`` of one intent at one bar (≤ 36 characters)."""
    out = f"cf{run_id}-{int(bar_start_ms) // 1000:x}-{intent}"
    if len(out) > MAX_LINK_ID or not run_id.isalnum():
        raise UserError(
            f"orderLinkId {out!r} must be at most {MAX_LINK_ID} characters from an alphanumeric run id"
        )
    return out


@dataclass
class KillSwitch:
    """``max_daily_loss``: fraction of the UTC day's first equity; ``max_orders_per_hour``: orders sent in
    any rolling hour. Either tripping flattens the exchange position and stops the run."""

    max_daily_loss: float | None = None
    max_orders_per_hour: int | None = None

    def __post_init__(self):
        if self.max_daily_loss is not None and not 0 < self.max_daily_loss < 1:
            raise UserError(f"--max-daily-loss must be a fraction in (0, 1), got {self.max_daily_loss}")
        if self.max_orders_per_hour is not None and self.max_orders_per_hour < 1:
            raise UserError(f"--max-orders-per-hour must be >= 1, got {self.max_orders_per_hour}")
        self._day: int | None = None
        self._day_equity = 0.0
        self._sent: deque[float] = deque()

    def loss_reason(self, equity: float | None, now_ms: int) -> str | None:
        if self.max_daily_loss is None or equity is None:
            return None
        day = now_ms // DAY_MS
        if day != self._day:
            self._day, self._day_equity = day, equity
        if equity < self._day_equity * (1 - self.max_daily_loss):
            return (
                f"daily loss {1 - equity / self._day_equity:.2%} is over --max-daily-loss "
                f"{self.max_daily_loss:.2%}"
            )
        return None

    def orders_reason(self, now_s: float) -> str | None:
        if self.max_orders_per_hour is None:
            return None
        while self._sent and self._sent[0] <= now_s - 3600:
            self._sent.popleft()
        if len(self._sent) >= self.max_orders_per_hour:
            return f"{len(self._sent)} orders in the last hour reach --max-orders-per-hour {self.max_orders_per_hour}"
        return None

    def record(self, now_s: float) -> None:
        self._sent.append(now_s)

    def state(self) -> dict:
        """The counters a restart must keep: a resume neither forgets the day's first equity nor the
        orders of the last hour."""
        return {"day": self._day, "day_equity": self._day_equity, "sent": list(self._sent)}

    def set_state(self, state: dict) -> None:
        self._day, self._day_equity = state["day"], float(state["day_equity"])
        self._sent = deque(float(t) for t in state["sent"])


class OrderMirror:
    """Keeps the exchange position equal to the paper broker's intent: after each closed bar, the side the
    broker will hold from the next open, ``qty × size`` contracts (size: the sizing rule's fraction, 1 for
    fixed sizing), never more than ``max_position``."""

    def __init__(
        self,
        exchange: BybitExchange,
        symbol: str,
        qty: float,
        *,
        max_position: float,
        run_id: str,
        close_on_hold: bool = False,
        stop_loss: float | None = None,
        take_profit: float | None = None,
        order_type: str = "market",
        post_only: bool = False,
        kill_switch: KillSwitch | None = None,
        emit: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if not qty > 0:
            raise UserError(f"--order-qty must be > 0 (contracts), got {qty}")
        if not max_position > 0:
            raise UserError(f"--max-position must be > 0 (contracts), got {max_position}")
        if order_type not in ("market", "limit"):
            raise UserError(f"--order-type must be market or limit, got {order_type!r}")
        if post_only and order_type != "limit":
            raise UserError("--post-only needs --order-type limit")
        self.exchange, self.symbol, self.run_id = exchange, symbol, run_id
        self.emit = emit or (lambda record: None)
        self.rules = exchange.instrument(symbol)
        self.qty = to_decimal(qty, "--order-qty")
        self.max_position = round_to_step(to_decimal(max_position, "--max-position"), self.rules.qty_step)
        self.close_on_hold, self.stop_loss, self.take_profit = close_on_hold, stop_loss, take_profit
        self.order_type, self.post_only = order_type, post_only
        self.kill_switch = kill_switch or KillSwitch()
        self._clock = clock
        self._sent: dict[str, dict | None] = {}  # link id → the exchange's order, for every intent sent
        self._resting: str | None = None  # link id of a limit order that may still rest on the book
        self.entry_qty: Decimal | None = None  # the magnitude intended for the position now held
        self.expected: Decimal | None = None  # the position we believe the exchange holds
        self.orders_sent = 0
        self._avg_price: Decimal | None = None
        self._held: Position | None = None  # the exchange position as last read (None in dry-run)
        self.killed: dict | None = None  # {"ms", "reason"} once the kill switch stopped the run

    # ---- durable state (the snapshot committed with each candle) ----------------------------------------

    def state(self) -> dict:
        """The exchange position as last read, the intended size and the kill-switch counters."""
        dec = lambda d: None if d is None else decimal_str(d)  # noqa: E731
        return {"run_id": self.run_id, "expected": dec(self.expected), "entry_qty": dec(self.entry_qty),
                "orders_sent": self.orders_sent, "resting": self._resting, "killed": self.killed,
                "kill_switch": self.kill_switch.state()}  # fmt: skip

    def set_state(self, state: dict) -> None:
        dec = lambda t: None if t is None else Decimal(t)  # noqa: E731
        self.expected, self.entry_qty = dec(state["expected"]), dec(state["entry_qty"])
        self.orders_sent, self._resting = int(state["orders_sent"]), state["resting"]
        self.killed = state["killed"]
        self.kill_switch.set_state(state["kill_switch"])

    def recover(self, bar_start_ms: int) -> list[str]:
        """Look up on the exchange every order this run may have sent for the bar at ``bar_start_ms``
        before a crash kept the bar from being committed: a replay of that bar then finds its order by
        link id (``order_recovered``) instead of sending a second one. Returns the link ids found."""
        found = []
        for intent in INTENTS:
            link = link_id(self.run_id, bar_start_ms, intent)
            order = self.exchange.query_order(self.symbol, link)
            if order is not None:
                self._sent[link] = order
                found.append(link)
                self._event("recovered", link_id=link, order=order)
        # A crash between a fill and its trading-stop call leaves the position unprotected: attach it now.
        # The position is read without touching ``expected``: the replayed bar reconciles as before.
        self._ensure_protected(self.exchange.position(self.symbol), "recover")
        return found

    # ---- events ----------------------------------------------------------------------------------------

    def _event(self, kind: str, **fields) -> None:
        self.emit({"event": f"order_{kind}", "symbol": self.symbol, **fields})

    def _position(self, when: str) -> Decimal:
        pos = self.exchange.position(self.symbol)
        qty = self.expected if pos is None else pos.qty  # dry-run: follow the printed orders
        qty = Decimal(0) if qty is None else qty
        if self.expected is not None and qty != self.expected:
            log.warning(
                "reconcile %s: exchange holds %s %s, expected %s",
                when,
                decimal_str(qty),
                self.symbol,
                decimal_str(self.expected),
            )
            self._event(
                "reconcile", when=when, exchange=decimal_str(qty), expected=decimal_str(self.expected)
            )
        self.expected = qty
        self._avg_price = None if pos is None else pos.avg_price
        self._held = pos
        return qty

    # ---- decisions --------------------------------------------------------------------------------------

    def target(self, current: Decimal, pending_signal: int, pending_size: float) -> Decimal:
        side = (current > 0) - (current < 0)
        if pending_signal != 0 and pending_signal != side:
            if pending_size <= 0:
                return Decimal(0)
            self.entry_qty = self.rules.qty(self.qty * to_decimal(pending_size, "size"))
            return pending_signal * min(self.entry_qty, self.max_position)
        if pending_signal == 0 and self.close_on_hold:
            return Decimal(0)
        if side == 0:
            return Decimal(0)
        # Holding: top a partial fill up to the intended size, bring an outside change back to it.
        return side * min(self.entry_qty or abs(current), self.max_position)

    def after_bar(
        self,
        bar_start_ms: int,
        pending_signal: int,
        *,
        pending_size: float = 1.0,
        reference_price: float | None = None,
        equity: float | None = None,
    ) -> dict | None:
        """Move the exchange position to the paper intent after the bar starting at ``bar_start_ms``.
        Returns the order (None when none was needed or possible)."""
        if self._resting is not None:  # a limit order of the previous bar that did not fill: cancel the rest
            self.exchange.cancel_order(self.symbol, self._resting)
            self._resting = None
        current = self._position("before decision")
        self._ensure_protected(self._held, "before decision")
        now_ms = int(self._clock() * 1000)
        reason = self.kill_switch.loss_reason(equity, now_ms)
        if reason:
            self.flatten(bar_start_ms, reason, current)
        target = self.target(current, pending_signal, pending_size)
        delta = target - current
        if delta == 0:
            if current == 0 and pending_signal != 0 and pending_size > 0:  # wanted, but too small to send
                why = self.rules.why_not(self.entry_qty or Decimal(0), None)
                self._event("intent", link_id=None, intent="open", skipped=why)
                log.warning("order skipped at bar %d: %s", bar_start_ms, why)
            return None
        intent = "flip" if target * current < 0 else "open" if abs(target) > abs(current) else "reduce"
        if target == 0:
            intent = "close"
        return self._send(bar_start_ms, intent, current, delta, reference_price)

    def _price(self, buy: bool, reference_price: float | None) -> Decimal | None:
        if self.order_type == "market":
            return None if reference_price is None else to_decimal(reference_price, "price")
        bid, ask = self.exchange.best_bid_ask(self.symbol)
        # A post-only buy rests at the best bid (a sell at the best ask): the maker side of the book.
        if self.post_only:
            return self.rules.price(bid, ROUND_DOWN) if buy else self.rules.price(ask, ROUND_UP)
        return self.rules.price(ask, ROUND_UP) if buy else self.rules.price(bid, ROUND_DOWN)

    def _send(
        self, bar_start_ms: int, intent: str, current: Decimal, delta: Decimal, reference_price
    ) -> dict | None:
        link = link_id(self.run_id, bar_start_ms, intent)
        if link in self._sent:  # the same intent twice (a replayed bar): never a second order
            log.warning("order %s was already sent; not sending it again", link)
            return None
        qty = self.rules.qty(delta)
        buy = delta > 0
        price = self._price(buy, reference_price)
        why = self.rules.why_not(qty, price)
        after = current + (qty if buy else -qty)
        if why is None and abs(after) > self.max_position:
            why = f"position guard: {self.symbol} would hold {decimal_str(after)}, above --max-position {decimal_str(self.max_position)}"
        self._event("intent", link_id=link, intent=intent, side="Buy" if buy else "Sell", qty=decimal_str(qty),
                    position=decimal_str(current), skipped=why)  # fmt: skip
        if why is not None:
            log.warning("order %s skipped: %s", link, why)
            return None
        reason = self.kill_switch.orders_reason(self._clock())
        if reason:
            self.flatten(bar_start_ms, reason, current)
        body = {
            "category": self.exchange.category,
            "symbol": self.symbol,
            "side": "Buy" if buy else "Sell",
            "orderType": "Market" if self.order_type == "market" else "Limit",
            "qty": decimal_str(qty),
            "orderLinkId": link,
            "reduceOnly": abs(after) < abs(current) and after * current >= 0,
        }
        if self.order_type == "limit":
            body |= {"price": decimal_str(price), "timeInForce": "PostOnly" if self.post_only else "GTC"}
        return self._submit(body, current)

    def _submit(self, body: dict, current: Decimal) -> dict | None:
        link = body["orderLinkId"]
        self._sent[link] = None  # from here on this intent counts as sent, whatever the reply
        self.kill_switch.record(self._clock())
        self.orders_sent += 1
        try:
            order, how = self.exchange.create_order(body)
        except OrderError as exc:
            self._event("rejected", link_id=link, error=str(exc))
            log.error("order %s refused: %s", link, exc)
            self._position("after refused order")
            self._ensure_protected(self._held, "after refused order")
            return None
        self._sent[link] = order
        self._event("sent", link_id=link, how=how, order=order)
        if how == "lost":
            log.error("order %s: no reply and the exchange has no such order; not resending it", link)
        if how == "dry_run":
            signed = Decimal(body["qty"]) * (1 if body["side"] == "Buy" else -1)
            self.expected = current + signed
            return None
        fill = self.exchange.query_order(self.symbol, link) if how != "found" else order
        if fill is not None:
            self._event("fill", link_id=link, status=fill.get("orderStatus"), filled=fill.get("cumExecQty"),
                        avg_price=fill.get("avgPrice"))  # fmt: skip
            if body["orderType"] == "Limit" and fill.get("orderStatus") in ("New", "PartiallyFilled"):
                self._resting = link
            signed = to_decimal(fill.get("cumExecQty") or "0", "cumExecQty") * (
                1 if body["side"] == "Buy" else -1
            )
            self.expected = current + signed
        after = self._position("after order")
        if after != 0 and not body["reduceOnly"]:  # a new entry (average price): new levels
            self._protect(after, self._avg_price)
        else:
            self._ensure_protected(self._held, "after order")
        return order

    def _ensure_protected(self, pos: Position | None, when: str) -> None:
        """Attach stop-loss / take-profit when the exchange holds a position without one that is
        configured. An already protected position is left alone (no trading-stop call)."""
        if (self.stop_loss is None and self.take_profit is None) or pos is None or pos.qty == 0:
            return
        missing = [name for name, rule, level in (("take_profit", self.take_profit, pos.take_profit),
                                                   ("stop_loss", self.stop_loss, pos.stop_loss))
                   if rule is not None and level is None]  # fmt: skip
        if not missing:
            return
        log.warning(
            "%s: exchange position %s %s has no %s; attaching it",
            when,
            decimal_str(pos.qty),
            self.symbol,
            "/".join(missing),
        )
        self._event("unprotected", when=when, position=decimal_str(pos.qty), missing=missing)
        self._protect(pos.qty, pos.avg_price)

    def _protect(self, position: Decimal, entry: Decimal | None) -> None:
        """Stop-loss / take-profit on the exchange at the backtest's distances from the average fill."""
        if (self.stop_loss is None and self.take_profit is None) or entry is None:
            return
        side = 1 if position > 0 else -1
        # Rounded away from the entry for the take-profit and toward it for the stop: never a worse level.
        tp = sl = None
        if self.take_profit is not None:
            tp = self.rules.price(
                entry * (1 + side * to_decimal(self.take_profit)), ROUND_UP if side > 0 else ROUND_DOWN
            )
        if self.stop_loss is not None:
            sl = self.rules.price(
                entry * (1 - side * to_decimal(self.stop_loss)), ROUND_UP if side > 0 else ROUND_DOWN
            )
        try:
            self.exchange.trading_stop(self.symbol, take_profit=tp, stop_loss=sl)
            self._event("protect", take_profit=tp and decimal_str(tp), stop_loss=sl and decimal_str(sl))
        except OrderError as exc:
            log.error("stop-loss/take-profit NOT attached on the exchange: %s", exc)
            self._event("protect", error=str(exc))

    def flatten(self, bar_start_ms: int, reason: str, current: Decimal | None = None) -> None:
        """Kill switch: close the whole exchange position reduce-only at market, then stop the run."""
        current = self._position("kill switch") if current is None else current
        log.error("KILL SWITCH: %s; flattening %s %s and stopping", reason, decimal_str(current), self.symbol)
        self.killed = {"ms": int(self._clock() * 1000), "reason": reason}
        self._event("kill", reason=reason, position=decimal_str(current))
        link = link_id(self.run_id, bar_start_ms, "kill")
        if current != 0 and link not in self._sent:
            body = {"category": self.exchange.category, "symbol": self.symbol,
                    "side": "Sell" if current > 0 else "Buy", "orderType": "Market",
                    "qty": decimal_str(abs(current)), "orderLinkId": link, "reduceOnly": True}  # fmt: skip
            self._submit(body, current)
        raise KillSwitchTripped(f"kill switch: {reason}; position flattened, run stopped")
