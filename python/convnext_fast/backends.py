"""Which kernel backend runs an op: ``cpu`` (C++ extension), ``triton`` (CUDA, or CPU under
``TRITON_INTERPRET=1``) or ``reference`` (pure PyTorch, always there).

``auto`` picks the fastest live backend for the tensor's device. ``use_backend(name)`` forces one for a
block of code (per thread / asyncio task); forcing one that cannot run raises instead of silently
falling back, so a benchmark or test never measures the wrong thing.
"""

from __future__ import annotations

import contextvars
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads lazily: `import convnext_fast` must stay cheap for numba-only users
    import torch

BACKENDS = ("auto", "cpu", "triton", "reference")
_forced: contextvars.ContextVar[str] = contextvars.ContextVar("convnext_fast_backend", default="auto")


def check_backend_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _cpu_problem() -> str | None:
    from . import _ext

    return None if _ext._C is not None else f"convnext_fast._C not loaded ({_ext.LOAD_ERROR})"


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


def resolve_backend(x: torch.Tensor, requested: str | None = None) -> str:
    """The backend that will run an op on tensor ``x`` (``requested`` overrides the context)."""
    name = check_backend_name(requested or _forced.get())
    if name == "auto":
        if x.is_cuda:
            return "triton" if _triton_problem() is None else "reference"
        return "cpu" if x.device.type == "cpu" and _cpu_problem() is None else "reference"
    if name == "cpu":
        if x.device.type != "cpu":
            raise ValueError(f"backend 'cpu' needs CPU tensors, got a tensor on {x.device}")
        problem = _cpu_problem()
    elif name == "triton":
        problem = _triton_problem()
        if problem is None and not x.is_cuda and not triton_interpreting():
            problem = f"tensor is on {x.device}; Triton needs CUDA (or TRITON_INTERPRET=1)"
    else:
        problem = None
    if problem is not None:
        raise RuntimeError(f"backend {name!r} was forced but cannot run: {problem}")
    return name
