"""Kline intervals and bar times: Bybit's interval names, candle lengths, the next bar's start and a
readable UTC time. The bottom of the data layer: candles, the OHLCV rule and the Bybit clients use it."""

from __future__ import annotations

import calendar
import datetime as dt

from convnext_fast.errors import UserError

INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")
_FIXED_INTERVAL_MS = {
    **{m: int(m) * 60_000 for m in INTERVALS[:10]},
    "D": 86_400_000,
    "W": 7 * 86_400_000,
}


def check_interval(interval: str | int) -> str:
    """Bybit's interval spelling ("60", "D", ...); raises a UserError naming ``interval`` otherwise."""
    text = str(interval).strip().upper()
    if text not in INTERVALS:
        raise UserError(
            f"interval {interval!r} is not a Bybit kline interval; use one of {', '.join(INTERVALS)}"
        )
    return text


def interval_to_ms(interval: str | int) -> int:
    """Fixed length of one candle in ms ("60" -> 3_600_000). Months vary in length, so "M" is refused:
    use :func:`next_start_ms` for arithmetic that must also work for monthly candles."""
    text = check_interval(interval)
    if text == "M":
        raise UserError("interval 'M' (monthly) has no fixed length in ms; use next_start_ms()")
    return _FIXED_INTERVAL_MS[text]


def next_start_ms(start_ms: int, interval: str | int) -> int:
    """Start of the candle after the one starting at ``start_ms`` (calendar months for "M")."""
    text = check_interval(interval)
    if text != "M":
        return int(start_ms) + _FIXED_INTERVAL_MS[text]
    t = dt.datetime.fromtimestamp(int(start_ms) / 1000, tz=dt.timezone.utc)
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000


def format_ms(ms: int) -> str:
    """Epoch ms as 'YYYY-MM-DD HH:MM UTC' for error messages and reports; a time no calendar can show (a
    garbled 1e18) comes back as raw epoch ms, so an error message about it cannot fail itself."""
    try:
        return dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError, TypeError):
        return f"{ms} epoch ms"


def parse_time_ms(text: str | None, name: str) -> int | None:
    """'2024-01-31', '2024-01-31 12:00' (UTC) or epoch ms; errors name the option."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"{name} {text!r} is not a date like 2024-01-31 or 2024-01-31 12:00, nor epoch ms"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp() * 1000)
