"""Raw Triton kernels for depthwise conv (odd K, 'same' padding) + LayerNorm over channels, channels-last.

One program owns ``REDUCE_T · SUBTILES`` time steps × all ``C`` channels of one sample (``BLOCK_C`` = next
power of two ≥ C), so the LayerNorm statistics never leave registers. Tiles are ``[REDUCE_T, BLOCK_C]``
with REDUCE_T and the warp count fixed by C and the dtype (:func:`~convnext_fast.ops.triton_utils.reduce_rows`):
every sum has one association order whatever the autotuner picks, so forward and backward are bitwise
reproducible across processes, tuned configs and batch sizes. The grid is (samples, tiles of a sample):
the batch on axis 0, which CUDA allows up to 2³¹ − 1 (axes 1 and 2 stop at 65,535), and no integer
division to recover the sample (a flat axis needed one, whose subroutine call spilled on sm_90). The K conv taps are K shifted loads of the
same rows: they hit L1/L2, so HBM sees x once. Row offsets are int64: ``B·T·C`` may exceed 2³¹.

Backward is two kernels because dx needs the LayerNorm gradient ``dy`` of *neighbouring* rows (the
transposed conv), which another program owns: ``_bwd_norm`` writes ``dy`` (fp32) and per-chunk partial
sums of dγ/dβ; ``_bwd_conv`` reads ``dy`` at the K shifts for dx and per-chunk partials of dW/db. The
partials cover fixed ``CHUNK_ROWS``-step chunks of one sample and are summed by the caller in a fixed order
(deterministic, no atomics).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ..triton_utils import ROW_CONFIGS, ROW_INTERPRETER_CONFIG, row_pruner

INTERPRETER_CONFIG = ROW_INTERPRETER_CONFIG
# Values per thread per tile set: the forward and bwd_norm hold a few tiles; bwd_conv many more (dx, dy,
# the unrolled taps' shifted loads, the [BLOCK_K, BLOCK_C] accumulator): a quarter of the others' budget
# (at 16, sm_90 still spilled: scripts/gpu_aot_check.py).
MAX_PER_THREAD = 32
# bwd_norm keeps y, xhat, g, gh and dy live; with two sub-tiles per step sm_80 spilled (STL/LDL) even at
# 56 registers (scripts/gpu_aot_check.py), so it runs one tile per step.
BWD_NORM_MAX_PER_THREAD = 16
BWD_CONV_MAX_PER_THREAD = 8


@triton.jit
def _conv_tile(x_ptr, w_ptr, cb_ptr, row0, t, c, T, C, K: tl.constexpr):
    """fp32 ``[BLOCK_T, BLOCK_C]`` depthwise-conv output for time steps ``t`` of the sample starting at
    row ``row0``; zero in padding columns so LayerNorm sums need no extra mask."""
    cmask = c < C
    acc = tl.zeros((t.shape[0], c.shape[0]), dtype=tl.float32)
    for k in tl.static_range(K):
        ts = t + (k - K // 2)
        rmask = (ts >= 0) & (ts < T)
        xk = tl.load(
            x_ptr + (row0 + ts)[:, None] * C + c[None, :], mask=rmask[:, None] & cmask[None, :], other=0.0
        )
        wk = tl.load(w_ptr + c * K + k, mask=cmask, other=0.0)
        acc += xk.to(tl.float32) * wk.to(tl.float32)[None, :]
    return acc + tl.load(cb_ptr + c, mask=cmask, other=0.0).to(tl.float32)[None, :]


def _tuned(max_per_thread: int, max_subtiles: int = 4):
    return triton.autotune(
        ROW_CONFIGS,
        key=["C", "T_BUCKET"],
        prune_configs_by={"early_config_prune": row_pruner(max_per_thread, max_subtiles)},
        cache_results=True,
    )


@_tuned(MAX_PER_THREAD)
@triton.jit
def dwconv_layernorm_fwd_kernel(
    x_ptr, w_ptr, cb_ptr, nw_ptr, nb_ptr, out_ptr, mean_ptr, rstd_ptr,
    T, C, T_BUCKET, inv_c, eps,
    K: tl.constexpr, REDUCE_T: tl.constexpr, SUBTILES: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    sample, tile = tl.program_id(0), tl.program_id(1)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    row0 = sample.to(tl.int64) * T
    nw = tl.load(nw_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    nb = tl.load(nb_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    for s in tl.static_range(SUBTILES):
        t = (tile * SUBTILES + s) * REDUCE_T + tl.arange(0, REDUCE_T)
        y = _conv_tile(x_ptr, w_ptr, cb_ptr, row0, t, c, T, C, K)
        # × 1/C and rsqrt rather than IEEE division: ptxas compiles fp32 division to a subroutine call whose
        # stack frame scripts/gpu_aot_check.py would flag (and rsqrt is 1 ulp, far inside the tolerance).
        mean = tl.sum(y, axis=1) * inv_c
        diff = tl.where(cmask[None, :], y - mean[:, None], 0.0)
        rstd = tl.math.rsqrt(tl.sum(diff * diff, axis=1) * inv_c + eps)
        out = diff * rstd[:, None] * nw[None, :] + nb[None, :]
        tmask = t < T
        tl.store(out_ptr + (row0 + t)[:, None] * C + c[None, :], out, mask=tmask[:, None] & cmask[None, :])
        tl.store(mean_ptr + row0 + t, mean, mask=tmask)
        tl.store(rstd_ptr + row0 + t, rstd, mask=tmask)


@_tuned(BWD_NORM_MAX_PER_THREAD, max_subtiles=1)
@triton.jit
def dwconv_layernorm_bwd_norm_kernel(
    x_ptr, w_ptr, cb_ptr, nw_ptr, dout_ptr, mean_ptr, rstd_ptr, dy_ptr, partial_ptr,
    T, C, T_BUCKET, inv_c, rows_per_chunk,
    K: tl.constexpr, REDUCE_T: tl.constexpr, SUBTILES: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """``dy = ∂L/∂(conv output)`` through LayerNorm, and this chunk's partial ``[dγ, dβ]`` (2 × C)."""
    sample, chunk, n_chunks = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    row0 = sample.to(tl.int64) * T
    nw = tl.load(nw_ptr + c, mask=cmask, other=0.0).to(tl.float32)
    dgamma = tl.zeros((BLOCK_C,), dtype=tl.float32)
    dbeta = tl.zeros((BLOCK_C,), dtype=tl.float32)
    t_end = tl.minimum(T, (chunk + 1) * rows_per_chunk)
    for t0 in range(chunk * rows_per_chunk, t_end, REDUCE_T * SUBTILES):
        for s in tl.static_range(SUBTILES):
            t = t0 + s * REDUCE_T + tl.arange(0, REDUCE_T)
            tmask = t < t_end
            mask = tmask[:, None] & cmask[None, :]
            offs = (row0 + t)[:, None] * C + c[None, :]
            mean = tl.load(mean_ptr + row0 + t, mask=tmask, other=0.0)
            rstd = tl.load(rstd_ptr + row0 + t, mask=tmask, other=0.0)
            y = _conv_tile(x_ptr, w_ptr, cb_ptr, row0, t, c, T, C, K)
            xhat = tl.where(mask, (y - mean[:, None]) * rstd[:, None], 0.0)
            g = tl.load(dout_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dgamma += tl.sum(g * xhat, axis=0)
            dbeta += tl.sum(g, axis=0)
            gh = g * nw[None, :]
            c1 = tl.sum(gh * xhat, axis=1) * inv_c
            c2 = tl.sum(gh, axis=1) * inv_c
            dy = (gh - xhat * c1[:, None] - c2[:, None]) * rstd[:, None]
            tl.store(dy_ptr + offs, dy, mask=mask)
    part = (sample.to(tl.int64) * n_chunks + chunk) * 2 * C
    tl.store(partial_ptr + part + c, dgamma, mask=cmask)
    tl.store(partial_ptr + part + C + c, dbeta, mask=cmask)


@_tuned(BWD_CONV_MAX_PER_THREAD)
@triton.jit
def dwconv_layernorm_bwd_conv_kernel(
    x_ptr, w_ptr, dy_ptr, dx_ptr, partial_ptr,
    T, C, T_BUCKET, rows_per_chunk,
    K: tl.constexpr, REDUCE_T: tl.constexpr, SUBTILES: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    """dx (transposed depthwise conv of dy) and this chunk's partial ``[dW[:, 0..K-1], db]`` ((K+1) × C),
    kept as one ``[BLOCK_K, BLOCK_C]`` accumulator (row K is db) since Triton has no register arrays."""
    sample, chunk, n_chunks = tl.program_id(0), tl.program_id(1), tl.num_programs(1)
    c = tl.arange(0, BLOCK_C)
    cmask = c < C
    taps = tl.arange(0, BLOCK_K)
    row0 = sample.to(tl.int64) * T
    acc = tl.zeros((BLOCK_K, BLOCK_C), dtype=tl.float32)
    t_end = tl.minimum(T, (chunk + 1) * rows_per_chunk)
    for t0 in range(chunk * rows_per_chunk, t_end, REDUCE_T * SUBTILES):
        for s in tl.static_range(SUBTILES):
            t = t0 + s * REDUCE_T + tl.arange(0, REDUCE_T)
            acc = _bwd_conv_tile(x_ptr, w_ptr, dy_ptr, dx_ptr, acc, taps, row0, t, t_end, c, T, C, K)
    part = (sample.to(tl.int64) * n_chunks + chunk) * (K + 1) * C
    tl.store(
        partial_ptr + part + taps[:, None] * C + c[None, :], acc, mask=(taps[:, None] <= K) & cmask[None, :]
    )


@triton.jit
def _bwd_conv_tile(x_ptr, w_ptr, dy_ptr, dx_ptr, acc, taps, row0, t, t_end, c, T, C, K: tl.constexpr):
    """dx for time steps ``t``; returns ``acc`` plus this tile's ``[dW[:, k] ..., db]`` rows."""
    cmask = c < C
    tmask = t < t_end
    dy = tl.load(
        dy_ptr + (row0 + t)[:, None] * C + c[None, :], mask=tmask[:, None] & cmask[None, :], other=0.0
    )
    dx = tl.zeros((t.shape[0], c.shape[0]), dtype=tl.float32)
    for k in tl.static_range(K):
        # y[t] = Σ_k w[k]·x[t+k-P]  ⇒  dx[s] = Σ_k w[k]·dy[s-k+P]  and  dW[k] = Σ_t dy[t]·x[t+k-P]
        wk = tl.load(w_ptr + c * K + k, mask=cmask, other=0.0).to(tl.float32)
        ts = t - (k - K // 2)
        smask = (ts >= 0) & (ts < T)
        dys = tl.load(
            dy_ptr + (row0 + ts)[:, None] * C + c[None, :],
            mask=smask[:, None] & cmask[None, :],
            other=0.0,
        )
        dx += dys * wk[None, :]
        ts = t + (k - K // 2)
        xmask = (ts >= 0) & (ts < T)
        xs = tl.load(
            x_ptr + (row0 + ts)[:, None] * C + c[None, :], mask=xmask[:, None] & cmask[None, :], other=0.0
        )
        acc += tl.where(taps[:, None] == k, tl.sum(dy * xs.to(tl.float32), axis=0)[None, :], 0.0)
    acc += tl.where(taps[:, None] == K, tl.sum(dy, axis=0)[None, :], 0.0)
    tl.store(dx_ptr + (row0 + t)[:, None] * C + c[None, :], dx, mask=tmask[:, None] & cmask[None, :])
    return acc
