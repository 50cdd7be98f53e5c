"""Argument checks every layer shares, so the same mistake reads the same wherever it is caught."""

from __future__ import annotations

import numpy as np


def check_finite(name: str, array, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming ``name``, the first NaN/Inf's flat index and its value, unless all are finite."""
    values = np.asarray(array)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise error(f"{name} has NaN/Inf at index {i} ({values.ravel()[i]!r})")
