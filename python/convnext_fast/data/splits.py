"""Chronological train / validation / test splits and walk-forward folds over bar indices.

Indices are *end bars* of samples: sample ``e`` sees the window of bars ``[e - window + 1, e]`` and its label
looks at bars ``(e, e + horizon]``. A training sample leaks nothing into a later segment whose first end bar
is ``s`` when ``e + horizon < s - window + 1``; between consecutive segments we leave ``purge + embargo``
unused bars, and ``purge >= horizon + window`` guarantees that (``horizon + window - 1`` is the exact minimum;
the rule keeps one bar to spare). The embargo is an extra margin on top (López
de Prado), for features whose serial correlation outlives the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .arg_checks import DatasetArgumentError, check_float, check_int


@dataclass(frozen=True)
class Split:
    """Sorted int64 end-bar indices of each segment; ``val`` / ``test`` may be empty."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def bounds(self) -> dict[str, tuple[int, int] | None]:
        """``{segment: (first, last) end bar}`` (None for an empty segment), e.g. for checkpoint metadata."""
        return {
            name: (int(idx[0]), int(idx[-1])) if len(idx) else None
            for name, idx in (("train", self.train), ("val", self.val), ("test", self.test))
        }


def required_purge(horizon: int, window: int) -> int:
    """The smallest purge that keeps every training window and label off the next segment's bars."""
    return check_int("horizon", horizon, minimum=1) + check_int("window", window, minimum=1)


def chronological_split(
    n: int,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    purge: int | None = None,
    embargo: int = 0,
    *,
    horizon: int | None = None,
    window: int | None = None,
) -> Split:
    """``[train] gap [val] gap [test]`` over ``n`` bars, with ``gap = purge + embargo`` unused bars.

    Pass ``horizon`` and ``window`` to have ``purge`` checked (or defaulted) to ``horizon + window``.
    """
    n = check_int("n", n, minimum=1)
    val_frac = check_float("val_frac", val_frac, low=0.0, high=1.0, include_high=False)
    test_frac = check_float("test_frac", test_frac, low=0.0, high=1.0, include_high=False)
    if val_frac + test_frac >= 1.0:
        raise DatasetArgumentError(f"val_frac + test_frac must be < 1, got {val_frac} + {test_frac}")
    gap = _gap(purge, embargo, horizon, window)
    n_val, n_test = _segment_size("val_frac", val_frac, n), _segment_size("test_frac", test_frac, n)
    test_start = n - n_test
    val_start = test_start - (gap if n_test else 0) - n_val
    train_stop = val_start - (gap if n_val else 0)
    if train_stop < 1:
        raise DatasetArgumentError(
            f"n={n} bars leave no training bars after val ({n_val}), test ({n_test}) and gaps of "
            f"purge + embargo = {gap}; use more data or smaller val_frac/test_frac/purge/embargo"
        )
    return Split(_range(0, train_stop), _range(val_start, val_start + n_val), _range(test_start, n))


def walk_forward_splits(
    n: int,
    n_folds: int,
    *,
    test_size: int | None = None,
    val_size: int | None = None,
    train_size: int | None = None,
    purge: int | None = None,
    embargo: int = 0,
    horizon: int | None = None,
    window: int | None = None,
) -> list[Split]:
    """Walk-forward folds whose test blocks tile the last ``n_folds · test_size`` bars in time order.

    Fold ``k``: ``[train] gap [val] gap [test_k]``; the training segment expands from bar 0 (``train_size``
    None) or rolls with a fixed length. Defaults: ``test_size = n // (2 · n_folds)`` (tests cover the last
    half of the data), ``val_size = test_size`` (0 disables validation).
    """
    n = check_int("n", n, minimum=1)
    n_folds = check_int("n_folds", n_folds, minimum=1)
    test_size = check_int("test_size", n // (2 * n_folds) if test_size is None else test_size, minimum=1)
    val_size = check_int("val_size", test_size if val_size is None else val_size, minimum=0)
    if train_size is not None:
        train_size = check_int("train_size", train_size, minimum=1)
    gap = _gap(purge, embargo, horizon, window)
    first_test = n - n_folds * test_size
    folds = []
    for k in range(n_folds):
        test_start = first_test + k * test_size
        val_start = test_start - gap - val_size
        train_stop = val_start - (gap if val_size else 0)
        train_start = 0 if train_size is None else train_stop - train_size
        if train_start < 0 or train_stop < 1:
            raise DatasetArgumentError(
                f"fold {k} of {n_folds} has no room for training: n={n}, test_size={test_size}, "
                f"val_size={val_size}, train_size={train_size}, purge + embargo = {gap}; "
                f"use more data, fewer folds or smaller sizes"
            )
        folds.append(
            Split(
                _range(train_start, train_stop),
                _range(val_start, val_start + val_size),
                _range(test_start, test_start + test_size),
            )
        )
    return folds


def _gap(purge, embargo, horizon, window) -> int:
    embargo = check_int("embargo", embargo, minimum=0)
    if (horizon is None) != (window is None):
        raise DatasetArgumentError("pass both horizon and window (to check purge) or neither")
    if horizon is None:
        if purge is None:
            raise DatasetArgumentError("pass purge (>= label horizon + window), or horizon and window")
        return check_int("purge", purge, minimum=0) + embargo
    needed = required_purge(horizon, window)
    if purge is None:
        return needed + embargo
    if check_int("purge", purge, minimum=0) < needed:
        raise DatasetArgumentError(
            f"purge={purge} is too small: training windows and labels would touch later segments; "
            f"it must be >= horizon + window = {horizon} + {window} = {needed}"
        )
    return purge + embargo


def _segment_size(name: str, frac: float, n: int) -> int:
    size = round(n * frac)
    if frac > 0 and size == 0:
        raise DatasetArgumentError(f"{name}={frac} of n={n} bars is less than one bar")
    return size


def _range(start: int, stop: int) -> np.ndarray:
    return np.arange(start, stop, dtype=np.int64)
