"""convnext_fast: a fast, verified 1D ConvNeXt for crypto trading signals.

- :mod:`convnext_fast.reference` — the pure-PyTorch oracle.
- :class:`convnext_fast.ConvNeXt1d` — the fused drop-in (C++ kernels on CPU, Triton on CUDA).
- :func:`convnext_fast.backends` — which kernel backends are live here.

The torch-facing names load on first use (PEP 562), so code that only needs the numba features, the
candle store or the backtest does not pay torch's multi-second import.
"""

from __future__ import annotations

import importlib

# Eager on purpose: importing the ``backends`` module would otherwise rebind the package attribute
# ``backends`` to the module, hiding the function of the same name. It does not import torch.
from .backends import BACKENDS, backends, use_backend
from .variants import VARIANTS, variant_config

__version__ = "0.1.0"

# public name → module that defines it
_LAZY = {
    "_ext": None,  # loads _C if it can (backends.py says what a missing one means)
    "reference": None,
    "ops": None,
    "ConvNeXt1d": "model",
    "convert": "model",
    "create": "model",
    "CLASS_NAMES": "reference",
    "InferenceSession": "inference",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'convnext_fast' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_LAZY[name] or name}")
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["BACKENDS", "VARIANTS", "backends", "use_backend", "variant_config", *_LAZY]
