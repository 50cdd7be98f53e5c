"""convnext_fast: a fast, verified 1D ConvNeXt for crypto trading signals.

- :mod:`convnext_fast.reference` — the pure-PyTorch oracle.
- :class:`convnext_fast.ConvNeXt1d` — the fused drop-in (C++ kernels on CPU, Triton on CUDA).
- :func:`convnext_fast.backends` — which kernel backends are live here.
"""

from __future__ import annotations

from . import _ext, reference
from .backends import BACKENDS, backends, use_backend
from .model import ConvNeXt1d, convert, create
from .reference import CLASS_NAMES
from .variants import VARIANTS, variant_config

__version__ = "0.1.0"

__all__ = [
    "BACKENDS",
    "CLASS_NAMES",
    "VARIANTS",
    "ConvNeXt1d",
    "_ext",
    "backends",
    "convert",
    "create",
    "reference",
    "use_backend",
    "variant_config",
]
