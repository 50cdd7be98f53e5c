"""Shared pieces of the Triton kernels: GELU in-kernel helpers, autotune pruning and keys, the dtype an op
computes in (autocast-aware), and one launcher that runs a kernel's fixed interpreter config under
``TRITON_INTERPRET=1``, its autotuner on a GPU, or one rule-picked config when PyTorch's deterministic
mode is on.

Autotuning: keys are powers of two (:func:`bucket`), so a new batch size re-tunes only when it crosses a
power of two, and results persist in Triton's cache directory (``TRITON_CACHE_DIR``, default
``~/.triton/cache``; ``cache_results=True`` on every autotuner): a second process reuses the first one's
choice instead of timing again.

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
# tl.dot's smallest M, N and K: narrower operands do not compile (interpreted kernels do not check it).
MIN_DOT_DIM = 16


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


# Row kernels (dwconv + LayerNorm, the bottleneck's branch gradient) work on [REDUCE_T, BLOCK_C] tiles whose
# height and warp count are fixed by (BLOCK_C, dtype) — see :func:`reduce_rows` and :func:`row_warps` —
# so every sum they compute (LayerNorm statistics over C, partial sums over rows) has one association
# order whatever is tuned. The autotuner only picks SUBTILES, how many such tiles one loop step handles
# (more loads in flight); the tiles are still summed one after another, in row order.
ROW_CONFIGS = [triton.Config({"SUBTILES": s}, num_warps=w, num_stages=1) for s in (1, 2, 4) for w in (4, 8)]
ROW_INTERPRETER_CONFIG = {"SUBTILES": 1, "num_warps": 4}
# Rows per partial sum in the backward reductions: fixed, so the partials do not depend on B or on tuning.
CHUNK_ROWS = 64


def row_warps(block_c: int) -> int:
    return 8 if block_c >= 512 else 4


def _row_budget(max_per_thread: int, element_size: int) -> int:
    return max_per_thread * 2 // element_size


def reduce_rows(block_c: int, element_size: int, max_per_thread: int) -> int:
    """REDUCE_T: the row tile height, a power of two in [2, 64] giving each thread a quarter of its
    register budget per tile (``max_per_thread`` values for 16-bit storage, half for fp32), so up to four
    sub-tiles fit; checked for BLOCK_C = 128 and 1024 by scripts/gpu_aot_check.py."""
    per_thread = _row_budget(max_per_thread, element_size) // 4
    rows = per_thread * 32 * row_warps(block_c) // block_c
    return max(2, min(64, 1 << max(0, rows.bit_length() - 1)))


def row_pruner(max_per_thread: int, max_subtiles: int = 4):
    """Keep the configs with the warp count fixed for this BLOCK_C: SUBTILES = 1 (a quarter of the budget,
    by :func:`reduce_rows`) and more sub-tiles while they hold at most half of ``max_per_thread`` (16-bit;
    half that for fp32) values per thread."""

    def prune(configs: Sequence[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        block_c = kwargs.get("BLOCK_C", named_args.get("BLOCK_C"))
        rows = kwargs.get("REDUCE_T", named_args.get("REDUCE_T"))
        data = named_args.get("x_ptr", named_args.get("dout_ptr"))
        budget = _row_budget(max_per_thread, data.element_size() if data is not None else 2)
        warps = row_warps(block_c)
        same_warps = [c for c in configs if c.num_warps == warps]
        step_limit = named_args.get("rows_per_chunk") or 1 << 30

        def fits(c: triton.Config) -> bool:
            subtiles = c.kwargs["SUBTILES"]
            if subtiles == 1:
                return True
            # several sub-tiles in flight: half the budget (fp32 at the full budget spilled on sm_80)
            per_thread = subtiles * rows * block_c / (32 * warps)
            # and a step taller than a backward chunk would only compute masked-out rows
            return subtiles <= max_subtiles and per_thread <= budget // 2 and subtiles * rows <= step_limit

        kept = [c for c in same_warps if fits(c)]
        return kept

    return prune


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 storage promises ≤1e-5 relative error, which TF32 tensor cores (~1e-3) cannot keep: fp32
    GEMMs run in full IEEE precision; fp16/bf16 use tensor cores with fp32 accumulation."""
    return "ieee" if dtype == torch.float32 else "tf32"


def bucket(n: int) -> int:
    """Autotune key for a size that varies at run time (rows M, time steps T): the next power of two."""
    return triton.next_power_of_2(max(1, int(n)))


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype an op's GEMMs run in: the autocast dtype when autocast is on for ``x``'s device (under
    CUDA autocast ``F.layer_norm`` returns fp32, which would otherwise select IEEE fp32 dots: no tensor
    cores, no fused MLP), else ``x``'s own dtype."""
    device = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def rule_config(tuned: triton.runtime.Autotuner, args: tuple, kwargs: dict) -> triton.Config:
    """The config used without timing: the first one (in the list's order of preference) that the
    kernel's pruner keeps for these arguments. A pure function of the arguments' sizes and dtypes."""
    named = dict(zip(tuned.arg_names, args, strict=False))
    prune = tuned.early_config_prune
    configs = prune(tuned.configs, named, **kwargs) if prune else tuned.configs
    return configs[0]


def launch(
    tuned: triton.runtime.Autotuner,
    interpreter_config: dict,
    grid: Callable[[dict], tuple[int, ...]],
    *args,
    **kwargs,
) -> None:
    """Launch ``tuned`` (an autotuned kernel) through ``wrap_triton`` so ``torch.compile`` sees it; under
    the interpreter run the plain kernel with one fixed, large config instead of timing every config on
    the CPU (the interpreter is ~10⁴× slower than a GPU). With ``torch.use_deterministic_algorithms(True)``
    the config is :func:`rule_config`'s, never a timing's: the same in every process."""
    if triton_interpreting():
        # Interpreted kernels are plain Python that wrap_triton cannot trace: when the op runs as its own
        # fake implementation (shape inference for torch.compile / opcheck), allocating outputs is enough.
        if torch._guards.detect_fake_mode(args) is not None:
            return
        meta = dict(interpreter_config)
        num_warps = meta.pop("num_warps", 4)
        wrap_triton(tuned.fn)[grid({**kwargs, **meta})](*args, **kwargs, **meta, num_warps=num_warps)
    elif torch.are_deterministic_algorithms_enabled():
        config = rule_config(tuned, args, kwargs)
        meta = {**kwargs, **config.kwargs}
        wrap_triton(tuned.fn)[grid(meta)](
            *args, **meta, num_warps=config.num_warps, num_stages=config.num_stages
        )
    else:
        wrap_triton(tuned)[grid](*args, **kwargs)
