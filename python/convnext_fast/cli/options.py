"""Every option more than one command takes, defined once: flags, type (which is also the validation),
choices, default and help. Subcommands add them by name (``add(parser, "data", "symbol", ...)``), and a
TOML ``--config`` table goes through the same actions (:mod:`.config`), so a value is checked the same
way wherever it comes from.

Only the standard library and light constants are imported here: building a parser (and so every
``--help``) must never pay for torch, numba or matplotlib. Defaults that mirror a library dataclass
(``BacktestConfig``, ``SizingRule``; ``TrainConfig``'s in train/cli.py) are spelt out, and
tests/cli/test_options.py holds them equal to the dataclass's.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

from ..backends import BACKENDS
from ..variants import VARIANTS
from .argtypes import (
    int_at_least,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    symbol_list,
    threshold_or_auto,
    window_length,
)

# Copies of constants whose modules import numpy or numba (tests/cli/test_options.py holds them equal):
# the parser, and so every --help, needs nothing heavier than the standard library.
INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")  # data/candles.py
CATEGORIES = ("spot", "linear", "inverse")
ORDER_TYPES = ("market", "limit")  # trading/backtest.py
SIZING_METHODS = ("fixed", "kelly", "vol-target")  # trading/sizing.py's SIZINGS
RUNS = "runs"  # git-ignored: where every output goes unless the user names a place

# ---------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]
    settings: dict = field(default_factory=dict)  # add_argument keywords: type, choices, default, help ...

    def add_to(self, parser, **overrides) -> argparse.Action:
        return parser.add_argument(*self.flags, **{**self.settings, **overrides})


def _option(*flags: str, **settings) -> Option:
    return Option(flags, settings)


OPTIONS: dict[str, Option] = {
    # candles
    "data": _option("--data", metavar="PATH", help="candles: a CSV file or a candle-store folder"),
    "symbol": _option("--symbol", default="BTCUSDT", help="symbol (in a candle-store folder, on Bybit)"),
    "symbols": _option(
        "--symbols", type=symbol_list, metavar="A,B,...", help="comma-separated symbols, e.g. BTCUSDT,ETHUSDT"
    ),
    "interval": _option("--interval", default="60", choices=INTERVALS, help="kline interval"),
    "category": _option("--category", default="linear", choices=CATEGORIES, help="Bybit market category"),
    "base_url": _option("--base-url", default="https://api.bybit.com", help="Bybit REST base URL"),
    "store": _option(
        "--store",
        default=f"{RUNS}/data",
        metavar="DIR",
        help=f"candle-store folder (default {RUNS}/data, git-ignored; e.g. --store data to share one)",
    ),
    "start": _option("--start", help="first bar: YYYY-MM-DD[ HH:MM] UTC or epoch ms"),
    # model
    "variant": _option("--variant", default="atto", choices=tuple(VARIANTS), help="model size"),
    "window": _option("--window", type=window_length, default=256, help="bars per model input, T"),
    "backend": _option(
        "--backend", default="auto", choices=BACKENDS, help="kernel backend (auto: fastest live)"
    ),
    "threads": _option("--threads", type=positive_int, default=1, help="torch threads"),
    "seed": _option("--seed", type=non_negative_int, default=0, help="random seed"),
    # decisions
    "threshold": _option(
        "--threshold",
        type=threshold_or_auto,
        default=0.5,
        metavar="TAU",
        help="confidence threshold τ of a Long/Short signal, or 'auto' (the checkpoint's validation-chosen τ)",
    ),
    "size": _option("--size", type=positive_float, default=1.0, help="position notional / equity"),
    # outputs
    "out": _option("--out", metavar="PATH", help="output folder"),
    "state": _option(
        "--state",
        default=f"{RUNS}/live/state.db",
        metavar="PATH",
        help=f"durable state (SQLite), committed with every candle (default {RUNS}/live/state.db, git-ignored)",
    ),
}


def add(parser, *names: str, **overrides) -> None:
    """Add the registry's options ``names`` to ``parser`` (or an argument group); ``overrides`` (only with
    one name) replace single settings where a command means something narrower, e.g. a required --data."""
    if overrides and len(names) != 1:
        raise ValueError("overrides apply to one option at a time")
    for name in names:
        OPTIONS[name].add_to(parser, **overrides)


# ---------------------------------------------------------------------------------------------- groups


# One option per ``BacktestConfig`` field: ``backtest``, ``live`` and ``demo`` trade under the same rules.
OPTIONS.update(
    initial_equity=_option(
        "--initial-equity", type=positive_float, default=10_000.0, help="starting equity (quote currency)"
    ),
    taker_fee_bps=_option(
        "--taker-fee-bps", type=non_negative_float, default=5.5, help="market-order fee, basis points"
    ),
    maker_fee_bps=_option(
        "--maker-fee-bps", type=non_negative_float, default=2.0, help="limit-order fee, basis points"
    ),
    slippage_bps=_option(
        "--slippage-bps", type=non_negative_float, default=0.0, help="market-order slippage, basis points"
    ),
    stop_loss=_option(
        "--stop-loss",
        type=positive_float,
        help="stop distance as a fraction of entry, e.g. 0.02 (default off)",
    ),
    take_profit=_option(
        "--take-profit", type=positive_float, help="take-profit distance as a fraction of entry (default off)"
    ),
    leverage=_option("--leverage", type=positive_float, default=1.0, help="max notional / equity"),
    close_on_hold=_option("--close-on-hold", action="store_true", help="a Hold signal closes the position"),
    maintenance_margin=_option(
        "--maintenance-margin",
        type=positive_float,
        help="liquidate at this equity / notional, e.g. 0.005 (default off)",
    ),
    order_type=_option(
        "--order-type",
        choices=ORDER_TYPES,
        default="market",
        help="signal entries/exits: market (taker fee + slippage) or limit (maker, e.g. post-only)",
    ),
    take_profit_order=_option(
        "--take-profit-order",
        choices=ORDER_TYPES,
        default="market",
        help="take-profit fills as market (what live attaches on the exchange) or limit (maker)",
    ),
)
TRADING_RULES = (
    "initial_equity",
    "taker_fee_bps",
    "maker_fee_bps",
    "slippage_bps",
    "stop_loss",
    "take_profit",
    "leverage",
    "close_on_hold",
    "maintenance_margin",
    "order_type",
    "take_profit_order",
)


def add_trading_rules(parser) -> None:
    """Every ``BacktestConfig`` option (``trading.backtest.config_from_args`` reads them back)."""
    add(parser, *TRADING_RULES)


def add_sizing(parser) -> None:
    """``--sizing`` and its parameters (``--size`` is the fixed size and the cap of the other methods)."""
    group = parser.add_argument_group("sizing (see docs/sizing.md)")
    group.add_argument(
        "--sizing", choices=SIZING_METHODS, default="fixed", help="position sizing (fixed: --size)"
    )
    group.add_argument(
        "--max-risk",
        type=positive_float,
        default=0.02,
        help="kelly: lose at most this fraction of equity at the stop",
    )
    group.add_argument("--kelly-scale", type=positive_float, default=0.5, help="kelly multiplier")
    group.add_argument(
        "--target-vol", type=positive_float, default=0.5, help="vol-target: annualised volatility to aim for"
    )
    group.add_argument(
        "--vol-window",
        type=int_at_least(2),
        default=168,
        help="vol-target: bars of returns in the realized volatility",
    )


def add_funding(parser) -> None:
    group = parser.add_argument_group("funding (perpetuals)")
    group.add_argument(
        "--funding",
        metavar="PATH",
        help="funding rates (funding.parquet or a time_ms,rate CSV); default: the store's, beside --data",
    )
    group.add_argument("--no-funding", action="store_true", help="charge no funding")


# ---------------------------------------------------------------------------------------------- help

_MENTIONS_DEFAULT = re.compile(r"\bdefault\b", re.IGNORECASE)


def show_default(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` once: not where the help already speaks of its default, nor for a flag
    that is off (False) or an option that is unset (None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or _MENTIONS_DEFAULT.search(text)
            or not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: {show_default(default).replace('%', '%%')})"
