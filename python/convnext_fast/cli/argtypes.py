"""Argument types for the command line: each converts a flag's text and is its validation, raising
``argparse.ArgumentTypeError`` with a message that reads well after "argument --flag: " (and after a
config file's "[table] key: ")."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _number(text: str, kind: type, what: str):
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = _number(text, int, "an integer")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}{why}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
# The model downsamples 32× (stem 4, then 2 per stage): a shorter window leaves nothing to classify.
window_length = int_at_least(32, " (the model's total stride)")


def float_in(
    low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = _number(text, float, "a number")
        too_low = value <= low if open_low else value < low
        too_high = high is not None and (value >= high if open_high else value > high)
        if value != value or too_low or too_high:
            bound = f"{'>' if open_low else '>='} {low:g}"
            if high is not None:
                bound += f" and {'<' if open_high else '<='} {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_float = float_in(0.0, open_low=True)
non_negative_float = float_in(0.0)


def threshold_or_auto(text: str) -> float | str:
    """``--threshold``: a number >= 0 (a probability for classification, a return for regression: the
    decision policy checks the range for the checkpoint's task), or ``auto``: the τ the checkpoint's trainer
    chose on its validation bars."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= 0.0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a number >= 0 (e.g. 0.45) or 'auto' (the checkpoint's validation-chosen τ), got {text!r}"
        )
    return value


def int_tuple(text: str) -> tuple[int, ...]:
    """``"1,4,12"`` → ``(1, 4, 12)``."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def positive_int_tuple(text: str) -> tuple[int, ...]:
    """``"1,4,12"`` → ``(1, 4, 12)``, every one >= 1 (bar counts, widths, depths)."""
    values = int_tuple(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def symbol_list(text: str) -> str:
    """Comma-separated symbols; kept as text (the commands split it with ``data.cli.parse_symbols``), but an
    empty name is refused here so a config file gets the same message as the flag."""
    if not all(s.strip() for s in text.split(",")):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty name (write A,B,C)")
    return text
