"""``--config FILE``: a TOML table per command (``[live]``, ``[train]`` ...), keys spelled like the flags
(``max-bars`` or ``max_bars``).

A table is turned into command-line tokens (``source = "ws"`` → ``--source ws``) that go through the
command's own parser in front of the real command line, so a file value meets exactly the type, choices
and range checks of its flag, and a flag on the command line still wins (the parser keeps the last one).
Each value is first checked against its action here, so an error names the file, table and key rather
than a flag the user never typed.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterable

from ..errors import UserError

_KINDS = {int: "an integer", float: "a number"}
# Options a file may not set: they steer the command line itself.
_NOT_IN_FILES = {"help", "version", "config"}


def read_config(path: str) -> dict:
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
    except IsADirectoryError:
        raise UserError(f"--config {path!r} is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"--config {path!r} is not valid TOML: {exc}") from None


def _flag(action: argparse.Action) -> str:
    """The long flag (for --x/--no-x, argparse lists --x first)."""
    return next(s for s in action.option_strings if s.startswith("--"))


def _scalar_text(value, where: str) -> str:
    """A TOML scalar as the text a user would type after the flag."""
    if isinstance(value, bool):
        raise UserError(f"{where}: expected a value, got the boolean {str(value).lower()}")
    if isinstance(value, str | int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, dt.datetime | dt.date):  # TOML dates are typed; the flags take ISO text
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    raise UserError(f"{where}: expected a string or a number, got a {type(value).__name__}")


def _check(action: argparse.Action, text: str, where: str) -> None:
    """The conversion argparse applies to ``text`` for ``action`` (type, then choices), with the error
    worded for a file."""
    value = text
    if action.type is not None:
        try:
            value = action.type(text)
        except argparse.ArgumentTypeError as exc:
            raise UserError(f"{where}: {exc}") from None
        except (TypeError, ValueError):
            kind = _KINDS.get(action.type) or getattr(action.type, "__name__", "a valid value")
            raise UserError(f"{where}: expected {kind}, got {text!r}") from None
    if action.choices is not None and value not in action.choices:
        options = ", ".join(map(str, action.choices))
        raise UserError(f"{where}: {text!r} is not one of {options}")


def _tokens(action: argparse.Action, value, where: str) -> list[str]:
    flag = _flag(action)
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return [flag if value else "--no-" + flag[2:]]
    if action.nargs == 0:  # store_true / store_false / store_const / count
        if not isinstance(value, bool):
            raise UserError(f"{where}: {flag} is a switch; write true or false, got {value!r}")
        on = value if not isinstance(action, argparse._StoreFalseAction) else not value
        return [flag] if on else []
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        texts = [_scalar_text(item, where) for item in items]
    elif isinstance(value, list):
        # A TOML list for a comma-separated option (--symbols, --htf ...): the same text the flag takes.
        texts = [",".join(_scalar_text(item, where) for item in value)]
    else:
        texts = [_scalar_text(value, where)]
    tokens = []
    for text in texts:
        _check(action, text, where)
        tokens.append(f"{flag}={text}")  # one token: a value starting with "-" is never taken for a flag
    return tokens


def _given_on_command_line(parser: argparse.ArgumentParser, argv: Iterable[str]) -> set[argparse.Action]:
    """Actions the command line sets (``--flag``, ``--flag=v`` or ``--no-flag``)."""
    by_flag = {flag: action for action in parser._actions for flag in action.option_strings}
    given = set()
    for token in argv:
        if token == "--":
            break
        action = by_flag.get(token.split("=", 1)[0])
        if action is not None:
            given.add(action)
    return given


def config_tokens(parser: argparse.ArgumentParser, table, argv: list[str], where: str) -> list[str]:
    """Tokens for ``table`` (one command's TOML table), to be parsed before ``argv`` by ``parser``. A key
    the command line also sets is left out, and so is any key sharing a mutually exclusive group with one
    (``--probs`` on the command line replaces the file's ``checkpoint``)."""
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table of options, got {type(table).__name__}")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in _NOT_IN_FILES}
    given = _given_on_command_line(parser, argv)
    for group in parser._mutually_exclusive_groups:
        if given & set(group._group_actions):
            given |= set(group._group_actions)
    tokens: list[str] = []
    for key, value in table.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            raise UserError(f"{where}: unknown option {key!r} (the keys are the command's flags without --)")
        key_tokens = _tokens(action, value, f"{where} {key}")  # checked even when overridden
        if action not in given:
            tokens += key_tokens
    return tokens
