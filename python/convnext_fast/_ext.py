"""Loads the compiled CPU kernels (``convnext_fast._C``) if they were built; never fails the import and
never warns: what a missing extension means (``auto`` runs the reference, a forced ``cpu`` fails) and the
one message about it belong to the backend policy, :mod:`convnext_fast.backends`.

``_C`` links OpenBLAS from the ``scipy-openblas32`` wheel; importing that package first loads the library
into the process, so ``_C`` finds it whatever its install layout (wheel, editable, relocated).

torch is imported first on purpose: ``_C`` needs ``libgomp.so.1``, and whichever copy loads first serves
the whole process. Loading torch's own first keeps one OpenMP runtime (torch's) for both; loading ``_C``
first would swap torch onto the system's libgomp. (``import convnext_fast`` loads this module lazily.)

``isa_limit`` forces the kernels onto a lower instruction-set variant for a block of code (tests, benchmarks);
csrc/kernels/isa.h has the table of variants and how one is chosen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch  # noqa: F401  (see above: torch's libgomp must be the process's OpenMP runtime)

try:
    import scipy_openblas32  # noqa: F401  (loads libscipy_openblas.so for _C)

    from . import _C  # type: ignore[attr-defined]

    LOAD_ERROR: str | None = None
except ImportError as exc:  # no compiler at install time, a wrong platform, a stripped wheel ...
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def isa_limit(level: str) -> Iterator[str]:
    """Caps the C++ kernels at ISA ``level`` inside the block, then restores the previous cap.

    Yields the level calls actually run at (``_C.isa()``: the lower of ``level`` and what the CPU has).
    The cap is process-wide and applies to kernel calls that start inside the block; a call already running
    on another thread keeps the level it started with.
    """
    if _C is None:
        raise RuntimeError(f"convnext_fast._C is not loaded ({LOAD_ERROR}); there are no kernels to limit")
    before = _C.set_isa_limit(level)  # raises ValueError naming the valid levels
    try:
        yield _C.isa()
    finally:
        _C.set_isa_limit(before)


__all__ = ["LOAD_ERROR", "_C", "isa_limit"]
