"""What the Bybit REST client (:mod:`.bybit`) and its WebSocket stream (:mod:`.bybit_ws`) share, kept apart
so that the stream does not import the client that opens it."""

from __future__ import annotations

from convnext_fast.errors import UserError


class BybitError(UserError):
    """Bybit refused or garbled a request in a way retrying will not fix."""


def check_symbol(symbol: str) -> str:
    """``symbol`` upper-cased, or a :class:`UserError` unless it is letters and digits like 'BTCUSDT'."""
    if not isinstance(symbol, str) or not symbol.strip().isalnum():
        raise UserError(f"symbol must be letters and digits like 'BTCUSDT', got {symbol!r}")
    return symbol.strip().upper()
