"""Shared pieces of the Triton kernels: GELU in-kernel helpers, autotune pruning, and one launcher that
runs a kernel's fixed interpreter config under ``TRITON_INTERPRET=1`` and its autotuner on a GPU.

Imported only by the Triton op modules, which the dispatcher imports lazily: ``@triton.jit`` decides at
decoration time whether a kernel is compiled or interpreted, so ``TRITON_INTERPRET`` must be set before
the first import (see :func:`check_interpreter_mode`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ..backends import triton_interpreting

# Dynamic shared memory a block may opt into, per compute capability (CUDA programming guide, compute capabilities).
SHARED_MEMORY_LIMIT = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448}
DEFAULT_SHARED_MEMORY_LIMIT = 101_376
# Programs per launch the row-chunked kernels aim for: a few waves on a 132-SM H100, and small enough
# that the per-program partial sums of the two-stage reductions stay a few MB.
TARGET_PROGRAMS = 512


@triton.jit
def gelu(a):
    """Exact (erf) GELU, as ``nn.GELU()`` in the reference."""
    return 0.5 * a * (1.0 + tl.math.erf(a * 0.7071067811865476))  # 1/√2


@triton.jit
def gelu_grad(a):
    """d GELU(a) / da = Φ(a) + a·φ(a)."""
    cdf = 0.5 * (1.0 + tl.math.erf(a * 0.7071067811865476))
    return cdf + a * 0.3989422804014327 * tl.exp(-0.5 * a * a)  # 1/√(2π)


def check_interpreter_mode(*kernels) -> None:
    """Fail loudly if ``TRITON_INTERPRET`` changed after the kernels were decorated: they would then try
    to compile for a GPU that is not there (or interpret on one that is)."""
    from triton.runtime.interpreter import InterpretedFunction

    for kernel in kernels:
        fn = kernel
        while hasattr(fn, "fn") and not isinstance(fn, InterpretedFunction):
            fn = fn.fn
        if isinstance(fn, InterpretedFunction) != triton_interpreting():
            raise RuntimeError(
                "TRITON_INTERPRET changed after convnext_fast's Triton kernels were imported; set "
                "TRITON_INTERPRET=1 before anything imports convnext_fast.ops.*.triton"
            )


def check_same_device(x: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Raise a ValueError naming the first argument that is not on ``x``'s device."""
    for name, t in tensors.items():
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")


def shared_memory_limit() -> int:
    if not torch.cuda.is_available():
        return DEFAULT_SHARED_MEMORY_LIMIT
    major, minor = torch.cuda.get_device_capability()
    return SHARED_MEMORY_LIMIT.get(10 * major + minor, DEFAULT_SHARED_MEMORY_LIMIT)


def row_pruner(max_per_thread: int):
    """Row-tile kernels hold a few ``BLOCK_T × BLOCK_C`` tiles in registers: keep configs giving each
    thread 4..``max_per_thread`` values per tile for 16-bit storage, half that for fp32 (fewer idles
    lanes, more spills; checked for BLOCK_C = 128 and 1024 by scripts/gpu_aot_check.py), at least one."""

    def per_thread(config: triton.Config, block_c: int) -> float:
        return config.kwargs["BLOCK_T"] * block_c / (32 * config.num_warps)

    def prune(configs: Sequence[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        block_c = kwargs.get("BLOCK_C", named_args.get("BLOCK_C"))
        data = named_args.get("x_ptr", named_args.get("dout_ptr"))
        budget = max_per_thread * 2 // (data.element_size() if data is not None else 2)
        kept = [c for c in configs if 4 <= per_thread(c, block_c) <= budget]
        return kept or [min(configs, key=lambda c: per_thread(c, block_c))]

    return prune


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 storage promises ≤1e-5 relative error, which TF32 tensor cores (~1e-3) cannot keep: fp32
    GEMMs run in full IEEE precision; fp16/bf16 use tensor cores with fp32 accumulation."""
    return "ieee" if dtype == torch.float32 else "tf32"


def row_chunks(batch: int, rows: int, min_rows: int = 16) -> int:
    """How many row chunks to split each sample's ``rows`` time steps into, so a launch has about
    ``TARGET_PROGRAMS`` programs (each chunk writes one partial sum, reduced afterwards)."""
    return max(1, min(triton.cdiv(rows, min_rows), triton.cdiv(TARGET_PROGRAMS, batch)))


def launch(
    tuned: triton.runtime.Autotuner,
    interpreter_config: dict,
    grid: Callable[[dict], tuple[int, ...]],
    *args,
    **kwargs,
) -> None:
    """Launch ``tuned`` (an autotuned kernel) through ``wrap_triton`` so ``torch.compile`` sees it; under
    the interpreter run the plain kernel with one fixed, large config instead of timing every config on
    the CPU (the interpreter is ~10⁴× slower than a GPU)."""
    if triton_interpreting():
        # Interpreted kernels are plain Python that wrap_triton cannot trace: when the op runs as its own
        # fake implementation (shape inference for torch.compile / opcheck), allocating outputs is enough.
        if torch._guards.detect_fake_mode(args) is not None:
            return
        meta = dict(interpreter_config)
        num_warps = meta.pop("num_warps", 4)
        wrap_triton(tuned.fn)[grid({**kwargs, **meta})](*args, **kwargs, **meta, num_warps=num_warps)
    else:
        wrap_triton(tuned)[grid](*args, **kwargs)
