"""The two fused ops of every ConvNeXt block, dispatched to a backend.

Each op is a folder holding ``reference.py`` (plain PyTorch, the oracle), ``cpu.py`` (C++ kernels) and
``triton.py`` (CUDA kernels); every one of them exposes a function of the same name and signature, all
channels-last ``[B, T, C]``:

- ``dwconv_layernorm(x, conv_weight, conv_bias, norm_weight, norm_bias, eps)`` → ``LayerNorm(dwconv7(x))``
- ``bottleneck(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale)`` →
  ``x + sample_scale[:, None, None] * gamma * (GELU(n @ fc1_weightᵀ + fc1_bias) @ fc2_weightᵀ + fc2_bias)``

``sample_scale`` (``[B]`` or None) carries drop path: 0 for a dropped sample, 1/keep for a kept one.
"""

from __future__ import annotations

import importlib
from functools import cache

import torch

from ..backends import resolve_backend
from ..reference import LN_EPS

# The op folders share their names with the dispatch functions below. Import the folders first so that
# the functions, defined afterwards, are what ``ops.dwconv_layernorm`` means (a later import of a
# submodule such as ``ops.dwconv_layernorm.cpu`` does not rebind the parent's attribute).
from . import bottleneck as _bottleneck_pkg  # noqa: F401
from . import dwconv_layernorm as _dwconv_layernorm_pkg  # noqa: F401

OPS = ("dwconv_layernorm", "bottleneck")


@cache
def implementation(op: str, backend: str):
    """The function implementing ``op`` on ``backend``. Whether a backend can run is decided once, by the
    backend policy (:func:`convnext_fast.backends.choose_backend`), before anything asks for it here."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {OPS}")
    return getattr(importlib.import_module(f"{__name__}.{op}.{backend}"), op)


def dwconv_layernorm(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor,
    norm_weight: torch.Tensor,
    norm_bias: torch.Tensor,
    eps: float = LN_EPS,
    backend: str | None = None,
) -> torch.Tensor:
    fn = implementation("dwconv_layernorm", resolve_backend(x, backend))
    return fn(x, conv_weight, conv_bias, norm_weight, norm_bias, eps)


def bottleneck(
    x: torch.Tensor,
    n: torch.Tensor,
    fc1_weight: torch.Tensor,
    fc1_bias: torch.Tensor,
    fc2_weight: torch.Tensor,
    fc2_bias: torch.Tensor,
    gamma: torch.Tensor,
    sample_scale: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    fn = implementation("bottleneck", resolve_backend(x, backend))
    return fn(x, n, fc1_weight, fc1_bias, fc2_weight, fc2_bias, gamma, sample_scale)
