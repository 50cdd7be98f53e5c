"""``convnext-fast fetch``: bring the local candle store up to date from Bybit, or import a CSV into it."""

from __future__ import annotations

import argparse
import sys

from convnext_fast.cli import options
from convnext_fast.data.intervals import parse_time_ms
from convnext_fast.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add(parser, "symbol", help="Bybit symbol")
    options.add(parser, "interval", "category", "store")
    parser.add_argument(
        "--start", help="first candle wanted: YYYY-MM-DD[ HH:MM] UTC or epoch ms (needed for an empty store)"
    )
    parser.add_argument("--end", help="last candle wanted (default: now)")
    parser.add_argument(
        "--import-csv",
        metavar="PATH",
        action="append",
        help="import this CSV instead of fetching; with several symbols: SYMBOL=PATH (repeat it) or a folder "
        "of SYMBOL.csv files",
    )
    options.add(parser, "base_url")
    parser.add_argument(
        "--funding", action="store_true", help="also store the funding history (linear/inverse perpetuals)"
    )
    many = parser.add_argument_group("many symbols")
    options.add(
        many,
        "symbols",
        help="comma-separated symbols fetched (or imported) one after another into the one store; every "
        "request of every symbol (and of every other fetch on this machine) shares one rate limit",
    )


def run(args: argparse.Namespace) -> int:
    from convnext_fast.data.bybit import BybitClient
    from convnext_fast.data.store import CandleStore

    store = CandleStore(args.store)
    if args.import_csv:
        for symbol, path in csv_imports(args.import_csv, getattr(args, "symbols", None), args.symbol):
            candles = store.import_csv(path, symbol, args.interval, args.category)
            print(f"{store.path(symbol, args.interval, args.category)}: {candles!r}")
            _report_gaps(candles.gaps(args.interval))
        return 0
    start = parse_time_ms(args.start, "--start")
    end = parse_time_ms(args.end, "--end")
    many = getattr(args, "symbols", None)  # absent from namespaces built without add_arguments
    symbols = parse_symbols(many) if many else [args.symbol]
    with BybitClient(args.base_url, category=args.category, on_retry=say_retry) as client:
        # One series per call; the client's limiter spaces every request of every symbol.
        for symbol in symbols:
            report = store.update(client, symbol, args.interval, start_ms=start, end_ms=end)
            print(f"{report.path}: +{report.added} candles, {report.candles!r}")
            _report_gaps(report.gaps)
            if args.funding:
                from convnext_fast.data.funding import update_store_funding

                print(update_store_funding(client, args.store, symbol, start, end))
    return 0


def say_retry(message: str) -> None:
    """A retry, said on stderr above any progress bar (tqdm.write keeps the bar intact on a terminal)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def parse_symbols(text: str) -> list[str]:
    """``"BTCUSDT, ETHUSDT"`` → ``["BTCUSDT", "ETHUSDT"]``; empty or repeated names are a UserError."""
    symbols = [s.strip().upper() for s in text.split(",")]
    if not all(symbols):
        raise UserError(f"--symbols {text!r}: an empty name (write A,B,C)")
    repeated = sorted({s for s in symbols if symbols.count(s) > 1})
    if repeated:
        raise UserError(f"--symbols {text!r}: {', '.join(repeated)} given more than once")
    return symbols


def csv_imports(items: list[str], symbols: str | None, default_symbol: str) -> list[tuple[str, str]]:
    """``(symbol, csv path)`` pairs from ``--import-csv`` values: one plain PATH (for ``--symbol``),
    SYMBOL=PATH entries, or a folder of SYMBOL.csv files; ``--symbols`` then picks (and requires) those."""
    from pathlib import Path

    pairs: dict[str, str] = {}
    for item in items:
        if "=" in item and not Path(item).exists():
            symbol, path = item.split("=", 1)
            pairs[symbol.strip().upper()] = path
        elif Path(item).is_dir():
            found = sorted(Path(item).glob("*.csv"))
            if not found:
                raise UserError(f"--import-csv {item!r}: the folder holds no .csv files")
            pairs.update({p.stem.upper(): str(p) for p in found})
        elif len(items) == 1 and not symbols:
            pairs[default_symbol] = item
        else:
            raise UserError(f"--import-csv {item!r}: with several imports write SYMBOL=PATH or give a folder")
    if symbols:
        wanted = parse_symbols(symbols)
        missing = [s for s in wanted if s not in pairs]
        if missing:
            raise UserError(f"--symbols: no CSV given for {', '.join(missing)} (have {', '.join(pairs)})")
        return [(s, pairs[s]) for s in wanted]
    return list(pairs.items())


def _report_gaps(gaps) -> None:
    """Every hole is printed: a fetch never ends quietly with candles missing."""
    for gap in gaps:
        print(f"  gap: {gap}")
    if gaps:
        print(
            f"  {len(gaps)} hole(s) remain: the exchange served no candles there (a later fetch retries them)",
            file=sys.stderr,
        )
