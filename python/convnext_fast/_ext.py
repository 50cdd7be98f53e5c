"""Loads the compiled CPU kernels (``convnext_fast._C``) if they were built; never fails the import and
never warns: what a missing extension means (``auto`` runs the reference, a forced ``cpu`` fails) and the
one message about it belong to the backend policy, :mod:`convnext_fast.backends`.

``_C`` links OpenBLAS from the ``scipy-openblas32`` wheel; importing that package first loads the library
into the process, so ``_C`` finds it whatever its install layout (wheel, editable, relocated).

torch is imported first on purpose: ``_C`` needs ``libgomp.so.1``, and whichever copy loads first serves
the whole process. Loading torch's own first keeps one OpenMP runtime (torch's) for both; loading ``_C``
first would swap torch onto the system's libgomp. (``import convnext_fast`` loads this module lazily.)
"""

from __future__ import annotations

import torch  # noqa: F401  (see above: torch's libgomp must be the process's OpenMP runtime)

try:
    import scipy_openblas32  # noqa: F401  (loads libscipy_openblas.so for _C)

    from . import _C  # type: ignore[attr-defined]

    LOAD_ERROR: str | None = None
except ImportError as exc:  # no compiler at install time, a wrong platform, a stripped wheel ...
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"

__all__ = ["LOAD_ERROR", "_C"]
