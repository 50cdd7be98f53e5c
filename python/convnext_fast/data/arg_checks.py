"""Argument checks shared by the dataset, label, split and augmentation modules.

Every failure names the argument the caller got wrong, so a bad config reads as one clear line in the CLI.
"""

from __future__ import annotations

import numbers

import numpy as np

from convnext_fast.errors import UserError


class DatasetArgumentError(UserError, ValueError):
    """A bad argument to the dataset / label / split / augmentation API (names the argument)."""


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DatasetArgumentError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DatasetArgumentError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value, *, low: float, high: float, include_high: bool = True) -> float:
    """A finite float in ``[low, high]`` (or ``[low, high)`` when ``include_high`` is False)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise DatasetArgumentError(f"{name} must be a finite number, got {value!r}")
    above = value > high if include_high else value >= high
    if value < low or above:
        closing = "]" if include_high else ")"
        raise DatasetArgumentError(f"{name} must be in [{low}, {high}{closing}, got {value}")
    return float(value)


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise DatasetArgumentError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_config_keys(what: str, data, known: set[str]) -> dict:
    """A config dict (e.g. read back from a checkpoint) whose keys are all among ``known``."""
    if not isinstance(data, dict):
        raise DatasetArgumentError(f"{what} must be a dict, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise DatasetArgumentError(f"{what} has unknown keys {unknown}; known keys are {sorted(known)}")
    return data


def check_prices(name: str, values, n: int | None = None) -> np.ndarray:
    """A 1-D float64 array of finite, positive prices (of length ``n`` when given)."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise DatasetArgumentError(f"{name} must be 1-D, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise DatasetArgumentError(f"{name} has {len(array)} bars but close has {n}")
    bad = np.flatnonzero(~(np.isfinite(array) & (array > 0)))
    if len(bad):
        raise DatasetArgumentError(
            f"{name} must be finite and > 0 (real prices); bar {bad[0]} is {array[bad[0]]!r} ({len(bad)} bad bars)"
        )
    return array
