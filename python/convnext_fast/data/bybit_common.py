"""What the Bybit REST client (:mod:`.bybit`), its WebSocket stream (:mod:`.bybit_ws`), the funding walk
and the order client share, kept apart so that the stream does not import the client that opens it."""

from __future__ import annotations

from convnext_fast.errors import UserError


class BybitError(UserError):
    """Bybit refused or garbled a request in a way retrying will not fix."""


def check_symbol(symbol: str) -> str:
    """``symbol`` upper-cased, or a :class:`UserError` unless it is letters and digits like 'BTCUSDT'."""
    if not isinstance(symbol, str) or not symbol.strip().isalnum():
        raise UserError(f"symbol must be letters and digits like 'BTCUSDT', got {symbol!r}")
    return symbol.strip().upper()


def digits_value(text, max_digits: int) -> int | None:
    """The whole number a string of at most ``max_digits`` ASCII digits spells (blanks around allowed); None
    for anything else. Bybit writes epoch times as such strings. ``int()`` alone is no check: it accepts
    Unicode digits and "1_000", raises on "²" (which ``str.isdigit`` accepts) and on more than 4300 digits."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= max_digits:
        return int(text)
    return None
