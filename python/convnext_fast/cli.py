"""``convnext-fast``: one command line for every area.

Each area keeps its options beside its code (``add_arguments(parser)`` and ``run(args) -> int`` in its own
``cli.py``); this module only composes them, reads an optional TOML file (``--config``: a ``[live]``,
``[train]``... table per subcommand, keys spelled like the flags; flags on the command line win) and turns
a :class:`~convnext_fast.errors.UserError` into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

# subcommand → (module with add_arguments/run, one-line help)
COMMANDS = {
    "fetch": ("convnext_fast.data.cli", "bring the candle store up to date from Bybit, or import a CSV"),
    "train": ("convnext_fast.train.cli", "train a model with walk-forward validation"),
    "tune": (
        "convnext_fast.train.tune",
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


def _read_config(path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise UserError("--config needs Python >= 3.11 (tomllib) or `pip install tomli`") from None

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"--config {path!r}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--config {path!r} is not valid TOML: {exc}") from None


def _apply_config(parser: argparse.ArgumentParser, table: dict, where: str) -> None:
    """Config values become defaults (so flags still override); a required option given there is no
    longer required on the command line."""
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table of options")
    actions = {a.dest: a for a in parser._actions}
    defaults = {}
    for key, value in table.items():
        dest = key.replace("-", "_")
        if dest not in actions or dest == "help":
            raise UserError(f"{where}: unknown option {key!r}")
        actions[dest].required = False
        defaults[dest] = value
    parser.set_defaults(**defaults)


def build_parser(
    command: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser; only ``command``'s options are loaded (all when None), so starting one command never
    pays for importing the others (matplotlib, the trainer ...)."""
    parser = argparse.ArgumentParser(
        prog="convnext-fast",
        description="A fast, verified 1D ConvNeXt for crypto trading signals.",
        epilog="Options may also come from a TOML file: --config FILE with a [<command>] table.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help="TOML file with a table per command, e.g. [live] symbol = 'ETHUSDT'")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    subparsers = {}
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if command in (None, name):
            importlib.import_module(module).add_arguments(p)
        subparsers[name] = p
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, rest = pre.parse_known_args(argv)
        command = next((a for a in rest if a in COMMANDS), None)
        parser, subparsers = build_parser(command)
        if known.config:
            config = _read_config(known.config)
            unknown = sorted(set(config) - set(COMMANDS))
            if unknown:
                raise UserError(
                    f"--config {known.config!r}: unknown table(s) {unknown}; use {sorted(COMMANDS)}"
                )
            if command in config:
                _apply_config(subparsers[command], config[command], f"--config {known.config!r} [{command}]")
        args = parser.parse_args(argv)
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except UserError as exc:
        print(f"convnext-fast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
