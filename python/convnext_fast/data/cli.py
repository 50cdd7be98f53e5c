"""``convnext-fast fetch``: bring the local candle store up to date from Bybit, or import a CSV into it."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from convnext_fast.data.candles import INTERVALS
from convnext_fast.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", default="BTCUSDT", help="Bybit symbol (default BTCUSDT)")
    parser.add_argument("--interval", default="60", choices=INTERVALS, help="kline interval (default 60)")
    parser.add_argument("--category", default="linear", choices=("spot", "linear", "inverse"))
    parser.add_argument("--store", default="data", help="candle store folder (default ./data)")
    parser.add_argument(
        "--start", help="first candle wanted: YYYY-MM-DD[ HH:MM] UTC or epoch ms (needed for an empty store)"
    )
    parser.add_argument("--end", help="last candle wanted (default: now)")
    parser.add_argument("--import-csv", metavar="PATH", help="import this CSV instead of fetching")
    parser.add_argument("--base-url", default="https://api.bybit.com", help="Bybit REST base URL")
    parser.add_argument(
        "--funding", action="store_true", help="also store the funding history (linear/inverse perpetuals)"
    )


def run(args: argparse.Namespace) -> int:
    from convnext_fast.data.bybit import BybitClient
    from convnext_fast.data.store import CandleStore

    store = CandleStore(args.store)
    if args.import_csv:
        candles = store.import_csv(args.import_csv, args.symbol, args.interval, args.category)
        path = store.path(args.symbol, args.interval, args.category)
        print(f"{path}: {candles!r}")
        _report_gaps(candles.gaps(args.interval))
        return 0
    start = parse_time_ms(args.start, "--start")
    end = parse_time_ms(args.end, "--end")
    with BybitClient(args.base_url, category=args.category) as client:
        # One series per call so that more symbols (or more kinds of series) are a loop over this.
        report = store.update(client, args.symbol, args.interval, start_ms=start, end_ms=end)
        if args.funding:
            from convnext_fast.data.funding import update_store_funding

            print(update_store_funding(client, args.store, args.symbol, start, end))
    print(f"{report.path}: +{report.added} candles, {report.candles!r}")
    _report_gaps(report.gaps)
    return 0


def _report_gaps(gaps) -> None:
    """Every hole is printed: a fetch never ends quietly with candles missing."""
    for gap in gaps:
        print(f"  gap: {gap}")
    if gaps:
        print(
            f"  {len(gaps)} hole(s) remain: the exchange served no candles there (a later fetch retries them)",
            file=sys.stderr,
        )


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
