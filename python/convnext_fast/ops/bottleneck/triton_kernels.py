"""Raw Triton kernels for the GELU inverted bottleneck ``x + s·γ·(GELU(n W1ᵀ + b1) W2ᵀ + b2)``.

Forward, two designs (:func:`use_fused_mlp` picks; numbers in docs/gpu_performance.md):

- ``fused_mlp_kernel``: one program owns ``BLOCK_M`` rows × all C, loops over the hidden dimension in
  ``BLOCK_H`` slices, and never writes the ``[M, 4C]`` hidden activation. Each program re-reads all of
  W1 and W2 (16·C² bytes in bf16) from L2, and its ``[BLOCK_M, C]`` fp32 accumulator must stay in
  registers: BLOCK_M = 64 (wgmma on sm_90) fits up to C = 128, only 32 (mma.sync) at C = 192–256. The
  corrected model predicts a win only while there are few row tiles, so the op runs it for 16-bit
  storage, 16 ≤ C ≤ 256 (``tl.dot`` needs every operand dimension ≥ 16), and for C > 128 only up to
  M·C² ≤ ``FUSED_MLP_MAX_WORK``.
- otherwise, and for fp32 (IEEE fp32 dots keep their operands in registers, and a whole-C one spills):
  ``gemm_bias_gelu_kernel`` (h = GELU(n W1ᵀ + b1)) then ``gemm_bias_residual_kernel``
  (z = h W2ᵀ + b2; out = x + s[sample]·γ·z), large-tile GEMMs with the elementwise work in epilogues.

The GEMM operands (n, weights, h, z) are in the op's compute dtype; the residual x and the output may be
wider (fp32 under autocast): every load converts to fp32 and every store to its pointer's dtype.

Both keep z (the fc2 output, C values per row) only when a backward will need it for dγ.

Backward: ``branch_grad_kernel`` (g = dout·γ·s and partial dγ, db2) then ``bwd_hidden_kernel``, which
recomputes a = n W1ᵀ + b1 and dh = g W2 for the same hidden tile in one kernel and writes h = GELU(a) and
da = dh·GELU'(a): nothing of size ``[M, 4C]`` is kept from forward to backward.

Row offsets are int64 (``M·4C`` reaches 2³¹ at e.g. B=512, T=1024, C=1024).
"""

from __future__ import annotations

from functools import cache

import triton
import triton.language as tl

from ..triton_utils import (
    CHUNK_ROWS,
    MIN_DOT_DIM,
    ROW_CONFIGS,
    ROW_INTERPRETER_CONFIG,
    SHARED_MEMORY_LIMIT,
    bucket,
    gelu,
    gelu_grad,
    row_pruner,
    shared_memory_limit,
)

GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in (
        (128, 128, 64, 8, 3),
        (128, 64, 32, 4, 4),
        (64, 64, 32, 4, 3),
        (32, 64, 64, 4, 3),
        (32, 64, 32, 4, 3),
    )
]
# Two accumulators per tile (a and dh): half-size tiles keep registers below the spill line.
DUAL_GEMM_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8}, num_warps=w, num_stages=s)
    for bm, bn, bk, w, s in ((128, 64, 32, 8, 3), (64, 64, 32, 4, 3), (32, 64, 64, 4, 3), (32, 64, 32, 4, 3))
]
BRANCH_GRAD_CHUNK_ROWS = CHUNK_ROWS
BRANCH_GRAD_MAX_PER_THREAD = 32
FUSED_MLP_MAX_C = 256
# Where the corrected model (scripts/gpu_perf_model.py; tests/scripts/test_gpu_perf_model.py checks this
# rule against it) predicts the fused MLP beats two GEMMs: always while 64-row tiles fit (C ≤ 128: wgmma,
# and the weight re-reads cost less than the hidden round trip saves); with 32-row tiles (C = 129–256,
# mma.sync) only up to M·C² ≈ 3.1e8, past which its per-tile weight re-reads from L2 dominate.
FUSED_MLP_MAX_WORK = 3.05e8
FUSED_MLP_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_H": bh}, num_warps=w, num_stages=s)
    for bm, bh, w, s in ((32, 64, 4, 2), (32, 64, 8, 2), (64, 64, 8, 2), (32, 32, 8, 2))
]
# Under TRITON_INTERPRET=1 (one fixed config; the interpreter runs tl.dot as a numpy matmul per tile).
INTERPRETER_GEMM_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4}
INTERPRETER_ROW_CONFIG = ROW_INTERPRETER_CONFIG
INTERPRETER_FUSED_MLP_CONFIG = {"BLOCK_M": 64, "BLOCK_H": 64, "num_warps": 4}


def gemm_shared_bytes(config: triton.Config, element_size: int, operand_pairs: int = 1) -> int:
    """Shared memory of a software-pipelined GEMM: ``operand_pairs`` A and B tiles per stage."""
    kw = config.kwargs
    return operand_pairs * (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * element_size * config.num_stages


# IEEE fp32 dot products run on FMA units with fragments in registers: big fp32 tiles spill
# (128×128 spilled kilobytes, 128×64 and 32×64×64 a few registers on sm_80, per scripts/gpu_aot_check.py),
# so fp32 gets ≤ 2048 accumulator values per program (per accumulator) and BLOCK_K ≤ 32: fp32 storage
# is for checking numerics on a GPU; bf16 is the fast path.
FP32_MAX_TILE = 2048
FP32_MAX_BLOCK_K = 32


def gemm_pruner(operand_pairs: int):
    def prune(configs, named_args, **kwargs):
        """Drop tiles far larger than the problem (idle lanes), fp32 tiles that would spill, and tiles
        over the device's shared memory."""
        m, n, k = named_args["M_BUCKET"], named_args["N"], named_args["K"]
        size = named_args["a_ptr"].element_size()
        limit = shared_memory_limit()
        kept = [
            c
            for c in configs
            if c.kwargs["BLOCK_M"] <= max(32, triton.next_power_of_2(m))
            and c.kwargs["BLOCK_N"] <= max(32, triton.next_power_of_2(n))
            and c.kwargs["BLOCK_K"] <= max(32, triton.next_power_of_2(k))
            and (size < 4 or c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= FP32_MAX_TILE)
            and (size < 4 or c.kwargs["BLOCK_K"] <= FP32_MAX_BLOCK_K)
            and gemm_shared_bytes(c, size, operand_pairs) <= limit
        ]
        return kept or [min(configs, key=lambda c: gemm_shared_bytes(c, size, operand_pairs))]

    return prune


def fused_mlp_configs(block_c: int, m_bucket: int, size: int, limit: int) -> list[triton.Config]:
    """Keep the resident ``[BLOCK_M, BLOCK_C]`` fp32 accumulator at ≤ 32 values per thread (64 spilled on
    sm_90 at C = 256, per scripts/gpu_aot_check.py) and the per-stage n, W1 and W2 tiles within shared
    memory; drop row tiles far larger than M."""

    def fits(c: triton.Config) -> bool:
        bm, bh = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_H"]
        smem = (bm * block_c + 2 * block_c * bh) * size * c.num_stages
        per_thread = bm * block_c / (32 * c.num_warps)
        return per_thread <= 32 and smem <= limit and bm <= max(32, m_bucket)

    kept = [c for c in FUSED_MLP_CONFIGS if fits(c)]
    return kept or [min(FUSED_MLP_CONFIGS, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_H"])]


def prune_fused_mlp(configs, named_args, **kwargs):
    size = named_args["n_ptr"].element_size()
    return fused_mlp_configs(kwargs["BLOCK_C"], named_args["M_BUCKET"], size, shared_memory_limit())


@cache
def fused_mlp_block_m(m: int, c: int, size: int = 2, capability: int = 90) -> int:
    """The tallest row tile the fused MLP's pruner keeps for this shape (what the model assumes)."""
    configs = fused_mlp_configs(triton.next_power_of_2(c), bucket(m), size, SHARED_MEMORY_LIMIT[capability])
    return max(cfg.kwargs["BLOCK_M"] for cfg in configs)


def fused_mlp_supported(c: int, size: int) -> bool:
    """Whether the fused MLP compiles and fits for width C: 16-bit storage (fp32 dots spill), every
    ``tl.dot`` dimension ≥ 16, and the accumulator within registers (C ≤ 256)."""
    return size == 2 and MIN_DOT_DIM <= triton.next_power_of_2(c) <= FUSED_MLP_MAX_C


def use_fused_mlp(m: int, c: int, size: int) -> bool:
    """The forward design for ``m`` rows of width ``c`` stored in ``size``-byte elements."""
    if not fused_mlp_supported(c, size):
        return False
    return fused_mlp_block_m(1 << 20, c, size) >= 64 or m * c * c <= FUSED_MLP_MAX_WORK


@triton.jit
def _tile_rows_cols(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Grouped tile order: GROUP_M row tiles share their weight column tiles while still in L2."""
    pid = tl.program_id(0)
    n_m, n_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * n_n)
    first_m = group * GROUP_M
    size_m = tl.minimum(n_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * n_n)) % size_m
    pid_n = (pid % (GROUP_M * n_n)) // size_m
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return rm, rn


@triton.jit
def _matmul_tile(
    acc, a_ptr, b_ptr, rm, rn, M, N, K, stride_bk, stride_bn,
    BLOCK_K: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """``acc + A[rm, :] @ B[:, rn]`` for row-major ``A [M, K]`` and ``B`` addressed by (k, n) strides."""
    rk = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(
            a_ptr + rm[:, None] * K + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0
        )
        b = tl.load(
            b_ptr + kk[:, None] * stride_bk + rn[None, :] * stride_bn,
            mask=(kk[:, None] < K) & (rn[None, :] < N),
            other=0.0,
        )
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


@triton.autotune(
    GEMM_CONFIGS,
    key=["M_BUCKET", "N", "K"],
    prune_configs_by={"early_config_prune": gemm_pruner(1)},
    cache_results=True,
)
@triton.jit
def gemm_bias_gelu_kernel(
    a_ptr, w_ptr, bias_ptr, out_ptr, M, N, K, M_BUCKET,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """``out [M, N] = GELU(a [M, K] @ w [N, K]ᵀ + bias)``."""
    rm, rn = _tile_rows_cols(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = _matmul_tile(acc, a_ptr, w_ptr, rm, rn, M, N, K, 1, K, BLOCK_K, PRECISION)
    acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], gelu(acc), mask=mask)


@triton.autotune(
    GEMM_CONFIGS,
    key=["M_BUCKET", "N", "K"],
    prune_configs_by={"early_config_prune": gemm_pruner(1)},
    cache_results=True,
)
@triton.jit
def gemm_bias_residual_kernel(
    a_ptr, w_ptr, bias_ptr, gamma_ptr, scale_ptr, res_ptr, out_ptr, z_ptr, M, N, K, M_BUCKET, rows_per_sample,
    HAS_SCALE: tl.constexpr, STORE_Z: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """``z = a [M, K] @ w [N, K]ᵀ + bias``; ``out = res + scale[row // rows_per_sample]·γ·z``."""
    rm, rn = _tile_rows_cols(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = _matmul_tile(acc, a_ptr, w_ptr, rm, rn, M, N, K, 1, K, BLOCK_K, PRECISION)
    _residual_epilogue(
        acc, rm, rn, M, N, bias_ptr, gamma_ptr, scale_ptr, res_ptr, out_ptr,
        z_ptr, rows_per_sample, HAS_SCALE, STORE_Z,
    )  # fmt: skip


@triton.jit
def _residual_epilogue(
    acc, rm, rn, M, N, bias_ptr, gamma_ptr, scale_ptr, res_ptr, out_ptr, z_ptr, rows_per_sample,
    HAS_SCALE: tl.constexpr, STORE_Z: tl.constexpr,
):  # fmt: skip
    """``z = acc + bias``; ``out = res + scale[row // rows_per_sample]·γ·z``; z stored if asked."""
    nmask = rn < N
    z = acc + tl.load(bias_ptr + rn, mask=nmask, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & nmask[None, :]
    offs = rm[:, None] * N + rn[None, :]
    branch = z * tl.load(gamma_ptr + rn, mask=nmask, other=0.0).to(tl.float32)[None, :]
    if HAS_SCALE:
        # int32 division (rows < 2³¹): int64 division is a subroutine call in SASS
        sample = rm.to(tl.int32) // rows_per_sample
        branch *= tl.load(scale_ptr + sample, mask=rm < M, other=0.0).to(tl.float32)[:, None]
    res = tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, res + branch, mask=mask)
    if STORE_Z:
        tl.store(z_ptr + offs, z, mask=mask)


@triton.autotune(
    FUSED_MLP_CONFIGS,
    key=["M_BUCKET", "C"],
    prune_configs_by={"early_config_prune": prune_fused_mlp},
    cache_results=True,
)
@triton.jit
def fused_mlp_kernel(
    n_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, gamma_ptr, scale_ptr, res_ptr, out_ptr, z_ptr, M, C, H, M_BUCKET,
    rows_per_sample,
    HAS_SCALE: tl.constexpr, STORE_Z: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """The whole bottleneck for ``BLOCK_M`` rows: for each hidden slice, ``h = GELU(n W1[slice]ᵀ + b1)``
    (rounded to the storage dtype, as the two-GEMM path stores it) and ``acc += h W2[:, slice]ᵀ``."""
    rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    n = tl.load(n_ptr + rm[:, None] * C + c[None, :], mask=(rm[:, None] < M) & cmask[None, :], other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for h0 in range(0, H, BLOCK_H):
        hh = h0 + tl.arange(0, BLOCK_H)
        hmask = hh < H
        w1t = tl.load(w1_ptr + hh[None, :] * C + c[:, None], mask=cmask[:, None] & hmask[None, :], other=0.0)
        pre = tl.dot(n, w1t, input_precision=PRECISION)
        pre += tl.load(b1_ptr + hh, mask=hmask, other=0.0).to(tl.float32)[None, :]
        hidden = gelu(pre).to(n.dtype)
        w2t = tl.load(w2_ptr + c[None, :] * H + hh[:, None], mask=hmask[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(hidden, w2t, acc, input_precision=PRECISION)
    _residual_epilogue(
        acc, rm, c, M, C, b2_ptr, gamma_ptr, scale_ptr, res_ptr, out_ptr,
        z_ptr, rows_per_sample, HAS_SCALE, STORE_Z,
    )  # fmt: skip


@triton.autotune(
    ROW_CONFIGS,
    key=["C"],
    prune_configs_by={"early_config_prune": row_pruner(BRANCH_GRAD_MAX_PER_THREAD)},
    cache_results=True,
)
@triton.jit
def branch_grad_kernel(
    dout_ptr, gamma_ptr, scale_ptr, z_ptr, g_ptr, partial_ptr, M, C, rows_per_sample, rows_per_chunk,
    HAS_SCALE: tl.constexpr, REDUCE_T: tl.constexpr, SUBTILES: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """``g = dout·γ·s`` (the gradient reaching the branch's fc2 output, stored in g's dtype) and this
    chunk's partial ``[dγ = Σ dout·s·z, db2 = Σ g]`` (2 × C), reduced afterwards in a fixed order. Rows
    are summed one REDUCE_T tile at a time, in order, whatever SUBTILES is."""
    chunk = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    gamma = tl.load(gamma_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    dgamma = tl.zeros((BLOCK_C,), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_C,), dtype=tl.float32)
    start = chunk.to(tl.int64) * rows_per_chunk
    end = tl.minimum(M, start + rows_per_chunk)
    for r0 in range(start, end, REDUCE_T * SUBTILES):
        for s in tl.static_range(SUBTILES):
            r = r0 + s * REDUCE_T + tl.arange(0, REDUCE_T)
            rmask = r < end
            mask = rmask[:, None] & cmask[None, :]
            offs = r[:, None] * C + c[None, :]
            d = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_SCALE:
                sample = r.to(tl.int32) // rows_per_sample  # int32 division: int64 is a subroutine call
                d *= tl.load(scale_ptr + sample, mask=rmask, other=0.0).to(tl.float32)[:, None]
            z = tl.load(z_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            g = d * gamma[None, :]
            dgamma += tl.sum(d * z, axis=0)
            dbias += tl.sum(g, axis=0)
            tl.store(g_ptr + offs, g, mask=mask)
    tl.store(partial_ptr + chunk * 2 * C + c, dgamma, mask=cmask)
    tl.store(partial_ptr + chunk * 2 * C + C + c, dbias, mask=cmask)


@triton.autotune(
    DUAL_GEMM_CONFIGS,
    key=["M_BUCKET", "N", "K"],
    prune_configs_by={"early_config_prune": gemm_pruner(2)},
    cache_results=True,
)
@triton.jit
def bwd_hidden_kernel(
    a_ptr, w1_ptr, b1_ptr, g_ptr, w2_ptr, h_ptr, da_ptr, M, N, K, M_BUCKET,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):  # fmt: skip
    """Recompute ``a = n W1ᵀ + b1`` (``a_ptr`` = n ``[M, K=C]``, W1 ``[N=4C, K]``) and ``dh = g W2``
    (g ``[M, K]``, W2 ``[K, N]``) for one ``[BLOCK_M, BLOCK_N]`` hidden tile; write ``h = GELU(a)``
    (for dW2) and ``da = dh·GELU'(a)`` (for dW1, db1 and dn)."""
    rm, rn = _tile_rows_cols(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pre = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    pre = _matmul_tile(pre, a_ptr, w1_ptr, rm, rn, M, N, K, 1, K, BLOCK_K, PRECISION)
    dh = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    dh = _matmul_tile(dh, g_ptr, w2_ptr, rm, rn, M, N, K, N, 1, BLOCK_K, PRECISION)
    pre += tl.load(b1_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    offs = rm[:, None] * N + rn[None, :]
    tl.store(h_ptr + offs, gelu(pre), mask=mask)
    tl.store(da_ptr + offs, dh * gelu_grad(pre), mask=mask)
