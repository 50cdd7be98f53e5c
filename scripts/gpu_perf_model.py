"""Performance model of the fused Triton ops vs the eager PyTorch sequence on an H100 (sm_90), printed as
markdown; ``--update-docs`` writes it to ``docs/gpu_performance.md`` (tests/scripts/test_gpu_perf_model.py
checks that file is in sync with this script). No GPU needed, and **nothing here is a measurement**.

    python scripts/gpu_perf_model.py                 # print the report
    python scripts/gpu_perf_model.py --update-docs   # regenerate docs/gpu_performance.md
    python scripts/gpu_perf_model.py --out FILE      # write it elsewhere

Corrected model (issue 17), per kernel: GPU time = max(FLOPs / MMA peak of the tile's path, HBM bytes /
HBM bandwidth, L2 bytes / L2 bandwidth) + a GPU-side tail; a sequence of kernels issued from Python takes
max(Σ GPU time, Σ CPU launch cost), because the CPU queues launches ahead of the GPU until it is the
slower side. L2 bytes count every re-read a tiled kernel makes: a GEMM re-reads its weight panel once per
row tile and its activation panel once per column tile; the fused MLP re-reads all of W1 and W2
(16·C² bytes in bf16) once per BLOCK_M-row tile. The MMA path follows the tile: BLOCK_M ≥ 64 compiles to
Hopper's wgmma (HGMMA), BLOCK_M = 32 to Ampere's mma.sync (HMMA), per scripts/gpu_aot_check.py.

The previous model (max(FLOPs/peak, bytes/HBM) + 3 µs per kernel, weights counted once, one MMA peak)
is kept as ``old_seconds`` so the report shows old and corrected predictions side by side.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from convnext_fast.ops.bottleneck.triton_kernels import FUSED_MLP_MAX_C, fused_mlp_block_m, use_fused_mlp
from convnext_fast.variants import VARIANTS

DOC = Path(__file__).resolve().parents[1] / "docs" / "gpu_performance.md"

# --- hardware and launch assumptions (H100 SXM); each is an input, not a measurement of this project ---
HBM_BYTES_PER_S = 3.0e12  # copy bandwidth of the order the issue quotes
L2_BYTES_PER_S = 7.0e12  # the review's figure: 537 MB of L2 re-reads ≈ 77 µs
WGMMA_FLOP_PER_S = 790e12  # dense bf16 wgmma throughput (figure quoted by the issue)
# mma.sync on Hopper: about half of wgmma's rate (FlashAttention-2, mma.sync, vs FlashAttention-3, wgmma,
# on H100 in their papers); an assumption until tests on a GPU measure it.
MMA_SYNC_FLOP_PER_S = 395e12
GPU_TAIL_S = 2e-6  # per kernel: launch-to-start gap and tail on the GPU side
TRITON_LAUNCH_S = 12e-6  # CPU cost of one Triton launch from Python: 9–15 µs in the anchors' reports
ATEN_LAUNCH_S = 5e-6  # CPU cost of one eager ATen op (cuBLAS / elementwise): assumed
GRAPH_LAUNCH_S = 1.5e-6  # per kernel node replayed from a CUDA graph: assumed
OLD_LAUNCH_S = 3e-6  # the previous model's single per-kernel figure
OLD_FLOP_PER_S = WGMMA_FLOP_PER_S

ELEMENT = 2  # bf16 storage
STATS = 8  # mean + rstd, fp32, per row
EAGER_TILE = (128, 128)  # cuBLAS's big-GEMM tile, wgmma
TRITON_GEMM_TILE = (128, 128)  # the largest GEMM_CONFIGS tile the pruner keeps for bf16 at these sizes
TRITON_DUAL_TILE = (128, 64)  # DUAL_GEMM_CONFIGS' largest
T_INPUT = 256
BATCHES = (1, 64, 512)
VARIANT_NAMES = ("tiny", "base")
STAGE_STRIDES = (4, 8, 16, 32)

# Published anchor results, quoted beside the predictions (not measured here).
ANCHORS = [
    (
        "Liger-Kernel fused MLP (SwiGLU/GeGLU) vs PyTorch, its README/benchmarks",
        "0.9–1.03× speed, 1.2–1.5× less memory",
    ),
    ("Triton kernel launch from Python, anchors' reports", "9–15 µs per launch"),
]


@dataclass(frozen=True)
class Kernel:
    name: str
    flops: float
    bytes: float  # minimum HBM traffic
    l2: float = 0.0  # bytes re-read from L2 beyond ``bytes`` (tile re-reads)
    wgmma: bool = True  # MMA path when flops are GEMM flops
    launch: str = "triton"  # "triton" | "aten": who launches it (CPU cost)

    def gpu_seconds(self) -> float:
        peak = WGMMA_FLOP_PER_S if self.wgmma else MMA_SYNC_FLOP_PER_S
        return max(self.flops / peak, self.bytes / HBM_BYTES_PER_S, self.l2 / L2_BYTES_PER_S) + GPU_TAIL_S

    def cpu_seconds(self) -> float:
        return TRITON_LAUNCH_S if self.launch == "triton" else ATEN_LAUNCH_S

    def bound(self) -> str:
        peak = WGMMA_FLOP_PER_S if self.wgmma else MMA_SYNC_FLOP_PER_S
        terms = {
            "compute": self.flops / peak,
            "HBM": self.bytes / HBM_BYTES_PER_S,
            "L2": self.l2 / L2_BYTES_PER_S,
        }
        return max(terms, key=terms.get)

    def old_seconds(self, old_bytes: float | None = None) -> float:
        b = self.bytes if old_bytes is None else old_bytes
        return max(self.flops / OLD_FLOP_PER_S, b / HBM_BYTES_PER_S) + OLD_LAUNCH_S


def seconds(kernels: list[Kernel], graph: bool = False) -> float:
    """Corrected time of a kernel sequence: GPU-bound or CPU-issue-bound, whichever is slower."""
    gpu = sum(k.gpu_seconds() for k in kernels)
    cpu = len(kernels) * GRAPH_LAUNCH_S if graph else sum(k.cpu_seconds() for k in kernels)
    return max(gpu, cpu)


def old_seconds(kernels: list[Kernel]) -> float:
    """The previous model, which did not list the backward's second-stage torch sums."""
    return sum(k.old_seconds() for k in kernels if not k.name.startswith("partial sum"))


def gemm_l2(m: int, n: int, k: int, tile: tuple[int, int]) -> float:
    """Bytes a tiled ``[M, K] × [K, N]`` GEMM reads from L2 beyond one pass: the B panel (K·N) once per
    row tile after the first, the A panel (M·K) once per column tile after the first."""
    bm, bn = tile
    return ((math.ceil(m / bm) - 1) * n * k + (math.ceil(n / bn) - 1) * m * k) * ELEMENT


def gemm_on_wgmma(m: int, tile: tuple[int, int]) -> bool:
    return min(tile[0], _pow2(m)) >= 64


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _gemm_tile(m: int, tile: tuple[int, int]) -> tuple[int, int]:
    """The pruners drop tiles far taller than M (BLOCK_M ≤ max(32, next power of two ≥ M))."""
    return (min(tile[0], max(32, _pow2(m))), tile[1])


def dwconv_layernorm_kernels(m: int, c: int) -> dict[str, list[Kernel]]:
    """Per-element byte counts: e = bf16 element; dy is fp32 (4 B) in the fused backward."""
    a, e, w = m * c, ELEMENT, 10 * c * ELEMENT  # 7 taps + conv bias + LN weight and bias
    conv_flops, ln_flops = 2 * 7 * a, 8 * a
    return {
        "eager fwd": [
            Kernel("conv1d", conv_flops, 2 * a * e + w, launch="aten"),
            Kernel("layer_norm", ln_flops, 2 * a * e + STATS * m, launch="aten"),
        ],
        "fused fwd": [Kernel("dwconv_layernorm_fwd", conv_flops + ln_flops, 2 * a * e + STATS * m + w)],
        "eager bwd": [
            Kernel("layer_norm_backward", 2 * ln_flops, 3 * a * e + STATS * m, launch="aten"),
            Kernel("conv1d_backward_input", conv_flops, 2 * a * e, launch="aten"),
            Kernel("conv1d_backward_weight", conv_flops, 2 * a * e, launch="aten"),
        ],
        "fused bwd": [
            # recomputes the conv; reads x, dout, stats; writes dy in fp32
            Kernel("bwd_norm", conv_flops + 2 * ln_flops, 2 * a * e + 4 * a + STATS * m),
            Kernel("bwd_conv", 2 * conv_flops, 4 * a + 2 * a * e),
            # second stage: dW, db, dγ, dβ, each a torch sum over the fixed-size chunks' partials
            *[Kernel("partial sum (torch)", 0, 0, launch="aten")] * 4,
        ],
    }


def bottleneck_kernels(m: int, c: int) -> dict[str, list[Kernel]]:
    """GEMM FLOPs 2·M·C·4C each; e = bf16 element; weights 2 × 4C² elements. "fused fwd" is the design
    the Triton op picks for this shape (:func:`use_fused_mlp`), "old fused fwd" the previous rule's
    (fused MLP for every C ≤ 256)."""
    seqs = _bottleneck_sequences(m, c)
    seqs["fused fwd"] = seqs["fused-MLP fwd" if use_fused_mlp(m, c, ELEMENT) else "two-GEMM fwd"]
    seqs["old fused fwd"] = seqs["fused-MLP fwd" if c <= FUSED_MLP_MAX_C else "two-GEMM fwd"]
    return seqs


def fused_mlp_kernel(m: int, c: int, z: int = 0) -> Kernel:
    a, e, h = m * c, ELEMENT, 4 * m * c
    gemm, w1 = 8 * m * c * c, 4 * c * c * ELEMENT
    bm = fused_mlp_block_m(m, c)
    return Kernel(
        "fused_mlp",
        2 * gemm + 8 * h,
        (3 * a + z) * e + 2 * w1,
        l2=(math.ceil(m / bm) - 1) * 2 * w1,
        wgmma=bm >= 64,
    )


def _bottleneck_sequences(m: int, c: int) -> dict[str, list[Kernel]]:
    a, e, h, hid = m * c, ELEMENT, 4 * m * c, 4 * c
    gemm, w1 = 8 * m * c * c, 4 * c * c * ELEMENT
    et, tt, dt = _gemm_tile(m, EAGER_TILE), _gemm_tile(m, TRITON_GEMM_TILE), _gemm_tile(m, TRITON_DUAL_TILE)
    up_e, down_e = gemm_l2(m, hid, c, et), gemm_l2(m, c, hid, et)
    up_t, down_t = gemm_l2(m, hid, c, tt), gemm_l2(m, c, hid, tt)
    wg_e, wg_t, wg_d = gemm_on_wgmma(m, et), gemm_on_wgmma(m, tt), gemm_on_wgmma(m, dt)
    # weight-gradient GEMMs reduce over M: [C, M] × [M, 4C]; their "rows" are C or 4C
    dw1_l2 = gemm_l2(hid, c, m, et)
    return {
        "eager fwd": [
            Kernel("addmm fc1", gemm, (a + h) * e + w1, up_e, wg_e, "aten"),
            Kernel("gelu", 8 * h, 2 * h * e, launch="aten"),
            Kernel("addmm fc2", gemm, (h + a) * e + w1, down_e, wg_e, "aten"),
            Kernel("mul gamma", a, 2 * a * e, launch="aten"),
            Kernel("add residual", a, 3 * a * e, launch="aten"),
        ],
        "two-GEMM fwd": [
            Kernel("gemm_bias_gelu", gemm + 8 * h, (a + h) * e + w1, up_t, wg_t),
            Kernel("gemm_bias_residual", gemm + 3 * a, (h + 3 * a) * e + w1, down_t, wg_t),
        ],
        "fused-MLP fwd": [fused_mlp_kernel(m, c)],
        "eager bwd": [
            Kernel("mul grad (dout·γ)", a, 2 * a * e, launch="aten"),
            Kernel("dγ reduction", 2 * a, 2 * a * e, launch="aten"),
            Kernel("mm dh = g W2", gemm, (a + h) * e + w1, gemm_l2(m, hid, c, et), wg_e, "aten"),
            Kernel("mm dW2 = gᵀh", gemm, (a + h) * e + w1, gemm_l2(c, hid, m, et), True, "aten"),
            Kernel("sum db2", a, a * e, launch="aten"),
            Kernel("gelu_backward", 12 * h, 3 * h * e, launch="aten"),
            Kernel("mm dn = da W1", gemm, (h + a) * e + w1, gemm_l2(m, c, hid, et), wg_e, "aten"),
            Kernel("mm dW1 = daᵀn", gemm, (h + a) * e + w1, dw1_l2, True, "aten"),
            Kernel("sum db1", h, h * e, launch="aten"),
        ],
        "fused bwd": [
            Kernel("branch_grad", 4 * a, 3 * a * e),
            *[Kernel("partial sum dγ, db2 (torch)", 0, 0, launch="aten")] * 2,
            Kernel(
                "bwd_hidden (recompute)",
                2 * gemm + 20 * h,
                (2 * a + 2 * h) * e + 2 * w1,
                2 * gemm_l2(m, hid, c, dt),
                wg_d,
            ),
            Kernel("mm dW2 = gᵀh", gemm, (a + h) * e + w1, gemm_l2(c, hid, m, et), True, "aten"),
            Kernel("mm dn = da W1", gemm, (h + a) * e + w1, gemm_l2(m, c, hid, et), wg_e, "aten"),
            Kernel("mm dW1 = daᵀn", gemm, (h + a) * e + w1, dw1_l2, True, "aten"),
            Kernel("sum db1", h, h * e, launch="aten"),
        ],
    }


def old_bottleneck_fused_fwd_seconds(m: int, c: int) -> float:
    """The previous model's prediction for the previous design (fused MLP for C ≤ 256, weights once)."""
    seqs = _bottleneck_sequences(m, c)
    if c > FUSED_MLP_MAX_C:
        return old_seconds(seqs["two-GEMM fwd"])
    return old_seconds(seqs["fused-MLP fwd"])


def stage_shapes():
    for variant in VARIANT_NAMES:
        dims, depths = VARIANTS[variant]
        for stage, (c, depth, stride) in enumerate(zip(dims, depths, STAGE_STRIDES, strict=True), start=1):
            for b in BATCHES:
                yield variant, stage, c, depth, b, b * (T_INPUT // stride)


def us(s: float) -> str:
    return f"{s * 1e6:.1f}"


def bottleneck_fwd_table() -> list[str]:
    lines = [
        "### GELU bottleneck, forward (bf16): old vs corrected predictions",
        "",
        "µs per block; *old* = previous model and design, the others corrected. L2 MB = fused MLP's weight",
        "re-reads (16·C² bytes per row tile). Design = what the op now runs for this shape.",
        "",
        "| variant | stage | C | B | M | fused-MLP tile | L2 MB | old fused | old eager | eager | two-GEMM |"
        " fused MLP | design | speedup vs eager |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for variant, stage, c, _depth, b, m in stage_shapes():
        seqs = bottleneck_kernels(m, c)
        fm = seqs["fused-MLP fwd"][0]
        bm = fused_mlp_block_m(m, c)
        fits = c <= FUSED_MLP_MAX_C
        tile = f"{bm} ({'wgmma' if fm.wgmma else 'mma.sync'})" if fits else "— (C > 256)"
        l2 = f"{fm.l2 / 1e6:.0f}" if fits else "—"
        design = "fused MLP" if use_fused_mlp(m, c, ELEMENT) else "two GEMMs"
        eager, chosen = seconds(seqs["eager fwd"]), seconds(seqs["fused fwd"])
        fused_mlp = us(seconds(seqs["fused-MLP fwd"])) if c <= FUSED_MLP_MAX_C else "—"
        lines.append(
            f"| {variant} | {stage} | {c} | {b} | {m} | {tile} | {l2} |"
            f" {us(old_bottleneck_fused_fwd_seconds(m, c))} | {us(old_seconds(seqs['eager fwd']))} | {us(eager)} |"
            f" {us(seconds(seqs['two-GEMM fwd']))} | {fused_mlp} | {design} | {eager / chosen:.2f}× |"
        )
    return [*lines, ""]


def op_table(name: str, kernels_of, direction: str) -> list[str]:
    lines = [
        f"### {name}, {direction}",
        "",
        "| variant | stage | C | B | M | MB eager | MB fused | old speedup | µs eager | µs fused | fused bound |"
        " speedup | speedup in a CUDA graph |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for variant, stage, c, _depth, b, m in stage_shapes():
        seqs = kernels_of(m, c)
        eager, fused = seqs[f"eager {direction}"], seqs[f"fused {direction}"]
        old_fused = seqs.get(f"old fused {direction}", fused)
        bound = max((k.gpu_seconds(), k.bound()) for k in fused)[1]
        e_s, f_s = seconds(eager), seconds(fused)
        lines.append(
            f"| {variant} | {stage} | {c} | {b} | {m} | {sum(k.bytes for k in eager) / 1e6:.2f} |"
            f" {sum(k.bytes for k in fused) / 1e6:.2f} | {old_seconds(eager) / old_seconds(old_fused):.2f}× |"
            f" {us(e_s)} | {us(f_s)} | {bound} | {e_s / f_s:.2f}× |"
            f" {seconds(eager, graph=True) / seconds(fused, graph=True):.2f}× |"
        )
    return [*lines, ""]


def model_summary() -> list[str]:
    """All blocks of a variant, eager vs fused, forward and forward+backward; old model beside."""
    lines = [
        "| variant | B | fwd µs eager | fwd µs fused | fwd speedup | old fwd speedup | fwd+bwd speedup |"
        " old fwd+bwd speedup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANT_NAMES:
        for b in BATCHES:
            new = {"eager fwd": [], "fused fwd": [], "eager bwd": [], "fused bwd": []}
            old = {"eager fwd": [], "old fused fwd": [], "eager bwd": [], "fused bwd": []}
            for v, _stage, c, depth, bb, m in stage_shapes():
                if v != variant or bb != b:
                    continue
                for seqs in (dwconv_layernorm_kernels(m, c), bottleneck_kernels(m, c)):
                    seqs.setdefault("old fused fwd", seqs["fused fwd"])
                    for key in new:
                        new[key] += seqs[key] * depth
                    for key in old:
                        old[key] += seqs[key] * depth
            fe, ff = seconds(new["eager fwd"]), seconds(new["fused fwd"])
            be, bf = (
                seconds(new["eager fwd"] + new["eager bwd"]),
                seconds(new["fused fwd"] + new["fused bwd"]),
            )
            ofe, off = old_seconds(old["eager fwd"]), old_seconds(old["old fused fwd"])
            obe, obf = ofe + old_seconds(old["eager bwd"]), off + old_seconds(old["fused bwd"])
            lines.append(
                f"| {variant} | {b} | {fe * 1e6:.0f} | {ff * 1e6:.0f} | {fe / ff:.2f}× | {ofe / off:.2f}× |"
                f" {be / bf:.2f}× | {obe / obf:.2f}× |"
            )
    return [*lines, ""]


def speedups(kernels_of, direction: str, batches, fused: str | None = None) -> str:
    values = []
    for _v, _s, c, _d, b, m in stage_shapes():
        if b in batches:
            seqs = kernels_of(m, c)
            values.append(seconds(seqs[f"eager {direction}"]) / seconds(seqs[fused or f"fused {direction}"]))
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return f"{low}×" if low == high else f"{low}–{high}×"


def findings() -> list[str]:
    """Conclusions with numbers taken from the model, so prose and tables cannot disagree."""
    dw, bn, big = dwconv_layernorm_kernels, bottleneck_kernels, (64, 512)
    return [
        f"- **dwconv + LayerNorm forward**: memory-bound; fusion halves HBM bytes and saves a launch:"
        f" {speedups(dw, 'fwd', big)} at B ≥ 64, {speedups(dw, 'fwd', (1,))} at B = 1 (launch-bound).",
        f"- **dwconv + LayerNorm backward**: {speedups(dw, 'bwd', big)} at B ≥ 64. The deterministic design"
        " writes and re-reads dy in fp32 and sums fixed-size partials in torch: no byte win.",
        "- **Bottleneck forward**: the fused MLP re-reads W1 and W2 from L2 once per row tile, and at"
        " C = 192–256 only BLOCK_M = 32 fits (mma.sync): past M·C² ≈ 3·10⁸ two GEMMs win."
        f" The op now runs the fused MLP only where this model predicts a win ({_fused_region()});"
        f" bottleneck forward overall {speedups(bn, 'fwd', big)} vs eager at B ≥ 64 (two GEMMs alone"
        f" {speedups(bn, 'fwd', big, 'two-GEMM fwd')}), where the old model claimed up to 7.6×.",
        f"- **Bottleneck backward** recomputes the hidden activation: {speedups(bn, 'bwd', big)} at B ≥ 64.",
        f"- **B = 1** (live inference) is CPU-launch-bound: eager issues 7 ATen ops per block, the fused path"
        f" 2–3 Triton launches at ~{TRITON_LAUNCH_S * 1e6:.0f} µs each, so the gain"
        f" ({speedups(bn, 'fwd', (1,))} bottleneck forward) is small. In a CUDA graph"
        f" ({GRAPH_LAUNCH_S * 1e6:.1f} µs per node, `convnext_fast.gpu_session`) the GPU time decides. Not"
        " modelled: Python dispatch per op call (a `torch.library` custom-op call measured ~49 µs on this"
        " project's dev CPU, docs/design.md), which at B = 1 can erase the launch savings outside a graph.",
        "",
    ]


def _fused_region() -> str:
    shapes = sorted({(c, m) for _v, _s, c, _d, _b, m in stage_shapes() if use_fused_mlp(m, c, ELEMENT)})
    if not shapes:
        return "no modelled shape"
    return ", ".join(f"C={c} M={m}" for c, m in shapes)


def render() -> str:
    lines = [
        "# Fused Triton ops: performance model (H100, corrected)",
        "",
        "Generated by `python scripts/gpu_perf_model.py --update-docs` (do not edit by hand;"
        " tests/scripts/test_gpu_perf_model.py checks it is in sync). **A model, not a measurement**: no GPU"
        " has run these kernels for this project yet; `scripts/gpu_check.sh` measures them when one is lent.",
        "",
        "Per kernel: GPU time = max(FLOPs / MMA peak, HBM bytes / HBM bandwidth, L2 re-read bytes / L2"
        " bandwidth) + GPU tail; a sequence takes max(Σ GPU time, Σ CPU launch cost). Inputs:",
        "",
        "| input | value | source |",
        "|---|---:|---|",
        f"| HBM bandwidth | {HBM_BYTES_PER_S / 1e12:.1f} TB/s | H100 SXM copy bandwidth (issue) |",
        f"| L2 bandwidth | {L2_BYTES_PER_S / 1e12:.1f} TB/s | review: 537 MB re-read ≈ 77 µs |",
        f"| wgmma (HGMMA) bf16 | {WGMMA_FLOP_PER_S / 1e12:.0f} TFLOP/s | dense peak quoted by the issue |",
        f"| mma.sync (HMMA) bf16 on Hopper | {MMA_SYNC_FLOP_PER_S / 1e12:.0f} TFLOP/s |"
        " assumed ½ of wgmma (FlashAttention-2 vs -3 on H100) |",
        f"| GPU tail per kernel | {GPU_TAIL_S * 1e6:.1f} µs | assumed |",
        f"| Triton launch (CPU) | {TRITON_LAUNCH_S * 1e6:.0f} µs | anchors: 9–15 µs |",
        f"| ATen op launch (CPU) | {ATEN_LAUNCH_S * 1e6:.0f} µs | assumed |",
        f"| CUDA-graph node | {GRAPH_LAUNCH_S * 1e6:.1f} µs | assumed |",
        f"| old model | max(FLOPs / {OLD_FLOP_PER_S / 1e12:.0f} T, bytes / HBM) + {OLD_LAUNCH_S * 1e6:.0f} µs |"
        " weights counted once, one MMA peak |",
        "",
        "Tiles: eager cuBLAS and the Triton GEMMs 128×128 (wgmma; 32-row tiles below M = 64), the backward's"
        " dual GEMM 128×64, the fused MLP the largest BLOCK_M its pruner keeps (64 for C ≤ 128 → wgmma; 32"
        " for C = 192–256 → mma.sync). Shapes: `tiny` and `base` stages at T = 256 input bars, M = B·T/stride.",
        "",
        "## Published anchors beside the predictions",
        "",
        "| anchor | published | this model, fused MLP vs eager at C ≤ 256 |",
        "|---|---|---|",
        f"| {ANCHORS[0][0]} | {ANCHORS[0][1]} | {_fused_vs_eager_range()} (where the op picks it) |",
        f"| {ANCHORS[1][0]} | {ANCHORS[1][1]} | {TRITON_LAUNCH_S * 1e6:.0f} µs used |",
        "",
        "## Whole network's blocks (Σ depth × per-block sequences), old vs corrected",
        "",
        *model_summary(),
        "## What the model says",
        "",
        *findings(),
        "## Per op and stage",
        "",
        *bottleneck_fwd_table(),
    ]
    for direction in ("fwd", "bwd"):
        lines += op_table("dwconv + LayerNorm", dwconv_layernorm_kernels, direction)
    lines += op_table("GELU bottleneck", bottleneck_kernels, "bwd")
    return "\n".join(lines)


def _fused_vs_eager_range() -> str:
    values = [
        seconds(bottleneck_kernels(m, c)["eager fwd"]) / seconds(bottleneck_kernels(m, c)["fused-MLP fwd"])
        for _v, _s, c, _d, _b, m in stage_shapes()
        if use_fused_mlp(m, c, ELEMENT)
    ]
    return f"{min(values):.2f}–{max(values):.2f}×" if values else "not picked"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--update-docs", action="store_true", help=f"write {DOC.relative_to(DOC.parents[1])}")
    where.add_argument("--out", type=Path, help="write the report to this file")
    args = parser.parse_args(argv)
    text = render()
    out = DOC if args.update_docs else args.out
    if out is None:
        print(text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
