"""The one backend policy: which kernels run a forward — ``cpu`` (the C++ extension), ``triton`` (CUDA,
or CPU under ``TRITON_INTERPRET=1``) or ``reference`` (pure PyTorch, always there).

``auto`` picks the fastest live backend for the device the tensors are on: ``triton`` on CUDA, ``cpu`` on
the CPU, else ``reference``. The fused model, the live predictor and every ``--backend`` option go through
:func:`choose_backend`, so "auto" means one thing everywhere. ``use_backend(name)`` forces one for a block of
code (per thread / asyncio task); forcing one that cannot run raises instead of silently falling back, so a
benchmark or test never measures the wrong thing.

A missing C++ extension is handled here and nowhere else: ``auto`` falls back to ``reference`` with one
warning (:data:`MISSING_EXTENSION`), a forced ``cpu`` raises with the same words.

torch is imported inside functions only: the command line imports this module for :data:`BACKENDS`
while building its ``--help``.
"""

from __future__ import annotations

import contextvars
import importlib.util
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads lazily: `import convnext_fast` must stay cheap for numba-only users
    import torch

BACKENDS = ("auto", "cpu", "triton", "reference")
MISSING_EXTENSION = (
    "convnext_fast._C could not be loaded ({error}); the C++ CPU kernels are off and the pure-PyTorch "
    "reference path is used instead. Reinstall with `pip install .` to build them."
)
_warned_missing_extension = False
_forced: contextvars.ContextVar[str] = contextvars.ContextVar("convnext_fast_backend", default="auto")


def check_backend_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class BackendUnavailable(RuntimeError):
    """A forced backend that cannot run here (the message says why)."""


def _cpu_problem() -> str | None:
    """Why the C++ backend cannot run (None when it can); warns once, the first time it finds it missing."""
    global _warned_missing_extension
    from . import _ext

    if _ext._C is not None and hasattr(_ext._C, "PackedModel"):
        return None
    # An extension from an older build (without the one-call session) counts as missing: rebuilding fixes both.
    error = _ext.LOAD_ERROR or "an older build without PackedModel"
    if not _warned_missing_extension:
        _warned_missing_extension = True
        warnings.warn(MISSING_EXTENSION.format(error=error), RuntimeWarning, stacklevel=3)
    return f"convnext_fast._C not loaded ({error})"


def _triton_problem() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'convnext_fast[triton]')"
    import torch

    if not (torch.cuda.is_available() or triton_interpreting()):
        return "no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU, slowly)"
    return None


def backends() -> dict[str, str]:
    """Report every backend as ``"live"`` or the reason it is off."""
    report = {}
    for name, problem in (("cpu", _cpu_problem()), ("triton", _triton_problem()), ("reference", None)):
        report[name] = "live" if problem is None else f"off: {problem}"
    return report


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Force a backend for every fused op called inside the block."""
    token = _forced.set(check_backend_name(name))
    try:
        yield
    finally:
        _forced.reset(token)


def current_backend() -> str:
    return _forced.get()


def choose_backend(device_type: str, requested: str | None = None) -> str:
    """The backend that runs a forward on ``device_type`` ("cpu", "cuda", ...): ``requested`` (default: the
    :func:`use_backend` context), with ``auto`` resolved by the one policy. A forced backend that cannot run
    raises :class:`BackendUnavailable`."""
    name = check_backend_name(requested or _forced.get())
    if name == "auto":
        if device_type == "cuda":
            return "triton" if _triton_problem() is None else "reference"
        return "cpu" if device_type == "cpu" and _cpu_problem() is None else "reference"
    if name == "cpu":
        problem = _cpu_problem()
        if problem is None and device_type != "cpu":
            problem = f"it needs CPU tensors, got a tensor on {device_type}"
    elif name == "triton":
        problem = _triton_problem()
        if problem is None and device_type != "cuda" and not triton_interpreting():
            problem = f"tensor is on {device_type}; Triton needs CUDA (or TRITON_INTERPRET=1)"
    else:
        problem = None
    if problem is not None:
        raise BackendUnavailable(f"backend {name!r} was forced but cannot run: {problem}")
    return name


def resolve_backend(x: torch.Tensor, requested: str | None = None) -> str:
    """The backend that will run an op on tensor ``x`` (``requested`` overrides the context)."""
    return choose_backend(x.device.type, requested)
