"""``convnext-fast``: one command line for every area.

Each area keeps its options beside its code (``add_arguments(parser)`` and ``run(args) -> int`` in its own
``cli.py``, built from the shared definitions in :mod:`.options`); this module only composes them, reads an
optional TOML file (``--config``, see :mod:`.config`) and turns a :class:`~convnext_fast.errors.UserError`
into one line on stderr with exit status 2.

Only the chosen command's module is imported, and those modules import torch, numba and matplotlib inside
``run``: ``--help`` and a mistyped flag answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import UserError
from .config import config_tokens, read_config
from .options import HelpFormatter

# subcommand → (module with add_arguments/run, one-line help)
COMMANDS = {
    "fetch": ("convnext_fast.data.cli", "bring the candle store up to date from Bybit, or import a CSV"),
    "train": ("convnext_fast.train.cli", "train a model with walk-forward validation"),
    "tune": (
        "convnext_fast.train.tune_cli",
        "search model and training hyperparameters over walk-forward folds (Optuna)",
    ),
    "backtest": (
        "convnext_fast.trading.cli",
        "backtest a checkpoint (or saved signals) and write an HTML report",
    ),
    "live": ("convnext_fast.live.cli", "run the live loop (Bybit, a replay, or the SYNTHETIC market)"),
    "bench": ("convnext_fast.live.bench", "measure the live loop's tick-to-signal latency"),
    "demo": ("convnext_fast.demo", "the main job: data → train → backtest → report → live replay"),
}
CONFIG_HELP = "TOML file with a table per command, e.g. [live] symbol = 'ETHUSDT'; flags given here win"


def build_parser(
    command: str | None = None, prog: str = "convnext-fast"
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser; only ``command``'s options are loaded (none when None: the top-level help lists the
    commands only), so starting one command never pays for importing the others."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A fast, verified 1D ConvNeXt for crypto trading signals.",
        epilog="Options may also come from a TOML file: --config FILE with a [<command>] table.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    subparsers = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if command == name:
            p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
            importlib.import_module(module).add_arguments(p)
        subparsers[name] = p
    return parser, subparsers


def split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(--config value, the other tokens)``: --config may stand before or after the command."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    return known.config, rest


def with_config(parser: argparse.ArgumentParser, command: str, argv: list[str], path: str) -> list[str]:
    """``argv`` (one command's tokens) with the file's ``[command]`` table in front of them."""
    tables = read_config(path)
    unknown = sorted(set(tables) - set(COMMANDS))
    if unknown:
        raise UserError(f"--config {path!r}: unknown table(s) {unknown}; use {sorted(COMMANDS)}")
    if command not in tables:
        return argv
    return config_tokens(parser, tables[command], argv, f"--config {path!r} [{command}]") + argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config, rest = split_config(argv)
        # The top level takes no option with a value but --config, so the command is the first word.
        at = next((i for i, token in enumerate(rest) if not token.startswith("-")), None)
        command = rest[at] if at is not None and rest[at] in COMMANDS else None
        parser, subparsers = build_parser(command)
        if config and command is not None:
            rest[at + 1 :] = with_config(subparsers[command], command, rest[at + 1 :], config)
        args = parser.parse_args(rest)
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except UserError as exc:
        print(f"convnext-fast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
