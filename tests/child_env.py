"""The environment of a test's child Python process. The child imports the same ``convnext_fast`` as the
test itself: the installed package in CI (with its compiled ``_C``), ``python/`` in a source checkout. A
child pointed at ``python/`` in CI would run without the C++ extension and recompile every numba function
for a second copy of the files (seconds per child)."""

from __future__ import annotations

import os
from pathlib import Path

import convnext_fast

PACKAGE_PARENT = str(Path(convnext_fast.__file__).resolve().parents[1])
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])


def child_env(*, tests: bool = False, **extra: str) -> dict[str, str]:
    """``os.environ`` plus ``extra``, with PYTHONPATH the folder holding the imported ``convnext_fast`` (and
    the project root when the child imports from ``tests``)."""
    path = [PACKAGE_PARENT, PROJECT_ROOT] if tests else [PACKAGE_PARENT]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), **extra}
