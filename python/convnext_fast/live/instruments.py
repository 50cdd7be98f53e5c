"""Bybit's trading rules for one instrument (instruments-info: qty step, min/max order qty, tick size, min
notional) and the exact decimal arithmetic that keeps every quantity and price on them.

Quantities and prices travel as decimal strings built with :mod:`decimal`, never with float formatting:
``:g`` turned ``1234567`` into ``1.23457e+06`` (rejected) and ``0.00012345678`` into ``0.000123457`` (the
local position drifted from the exchange's).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

from ..errors import UserError


def to_decimal(value, what: str = "value") -> Decimal:
    """A float/int/str as the Decimal it reads as (``repr`` of a float: 0.1 → Decimal('0.1'), not the binary
    expansion)."""
    try:
        if isinstance(value, str | Decimal):
            number = Decimal(value)
        elif isinstance(value, numbers.Integral):
            number = Decimal(int(value))
        else:  # numpy floats too: repr of the Python float, never numpy's own repr
            number = Decimal(repr(float(value)))
    except (InvalidOperation, ValueError, TypeError, OverflowError):
        raise UserError(f"{what} must be a number, got {value!r}") from None
    if not number.is_finite():
        raise UserError(f"{what} must be finite, got {value!r}")
    return number


def decimal_str(value: Decimal) -> str:
    """Plain positional notation without exponent or trailing zeros: 1234567 → '1234567', 1E-8 → '0.00000001'."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def round_to_step(value: Decimal, step: Decimal, rounding=ROUND_DOWN) -> Decimal:
    """``value`` on the grid of ``step`` (toward zero by default: never more than asked)."""
    return (value / step).to_integral_value(rounding=rounding) * step


@dataclass(frozen=True)
class InstrumentRules:
    symbol: str
    qty_step: Decimal
    min_qty: Decimal
    max_qty: Decimal  # for market orders Bybit's maxMktOrderQty where given (it is smaller)
    tick_size: Decimal
    min_notional: Decimal = Decimal(0)

    @classmethod
    def from_info(cls, row: dict, *, market: bool = True) -> InstrumentRules:
        """From one row of ``GET /v5/market/instruments-info`` ``result.list``."""
        try:
            lot, price = row["lotSizeFilter"], row["priceFilter"]
            if not (isinstance(lot, dict) and isinstance(price, dict)):
                raise TypeError("lotSizeFilter and priceFilter must be objects")
            step = Decimal(lot.get("qtyStep") or lot["basePrecision"])  # spot has basePrecision
            max_qty = Decimal(lot["maxOrderQty"])
            if market and lot.get("maxMktOrderQty"):
                max_qty = min(max_qty, Decimal(lot["maxMktOrderQty"]))
            rules = cls(
                symbol=str(row["symbol"]),
                qty_step=step,
                min_qty=Decimal(lot["minOrderQty"]),
                max_qty=max_qty,
                tick_size=Decimal(price["tickSize"]),
                min_notional=Decimal(lot.get("minNotionalValue") or lot.get("minOrderAmt") or "0"),
            )
        except (KeyError, TypeError, InvalidOperation) as exc:
            raise UserError(
                f"Bybit instruments-info row is not understood ({exc!r}): {str(row)[:200]}"
            ) from None
        limits = (rules.qty_step, rules.min_qty, rules.max_qty, rules.tick_size, rules.min_notional)
        if not all(v.is_finite() for v in limits) or not (
            rules.qty_step > 0 and rules.tick_size > 0 and 0 <= rules.min_qty <= rules.max_qty
        ):
            raise UserError(f"Bybit instruments-info for {rules.symbol} has unusable limits: {rules}")
        return rules

    def qty(self, value) -> Decimal:
        """|value| rounded down to the qty step (the order never exceeds what was asked)."""
        return round_to_step(abs(to_decimal(value, "quantity")), self.qty_step)

    def price(self, value, rounding=ROUND_HALF_EVEN) -> Decimal:
        return round_to_step(to_decimal(value, "price"), self.tick_size, rounding)

    def why_not(self, qty: Decimal, price: Decimal | None) -> str | None:
        """Why an order of ``qty`` (already on the step) cannot be sent; None when it can."""
        if qty <= 0:
            return f"quantity rounds to 0 at qty step {decimal_str(self.qty_step)}"
        if qty < self.min_qty:
            return f"quantity {decimal_str(qty)} is below the minimum order qty {decimal_str(self.min_qty)}"
        if qty > self.max_qty:
            return f"quantity {decimal_str(qty)} is above the maximum order qty {decimal_str(self.max_qty)}"
        if price is not None and self.min_notional > 0 and qty * price < self.min_notional:
            return (
                f"notional {decimal_str(qty * price)} is below the minimum {decimal_str(self.min_notional)}"
            )
        return None
