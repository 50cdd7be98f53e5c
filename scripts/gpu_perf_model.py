"""Roofline model of the fused Triton ops vs the eager PyTorch sequence on an H100, written to
``docs/gpu_performance.md``. No GPU needed: it counts FLOPs and the minimum HBM bytes each kernel must
move, and predicts each kernel's time as ``max(FLOPs / peak, bytes / bandwidth) + launch latency``.

    python scripts/gpu_perf_model.py [--out docs/gpu_performance.md]

This is a best case (perfect caching within a kernel, peak throughput); it says what fusion *can*
deliver, not what the kernels do — nothing here was measured on a GPU.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from convnext_fast.ops.bottleneck.triton_kernels import FUSED_MLP_MAX_C
from convnext_fast.variants import VARIANTS

HBM_BYTES_PER_S = 3.0e12  # H100 SXM, measured copy bandwidth of the order quoted by the issue
BF16_FLOP_PER_S = 790e12  # dense bf16 tensor-core throughput (measured figure quoted by the issue)
LAUNCH_S = 3e-6  # per-kernel launch + tail latency assumed for back-to-back launches
ELEMENT = 2  # bf16 storage
STATS = 8  # mean + rstd, fp32, per row
TRAINING_KEEPS_Z = False  # forward-only (inference) byte counts; training adds C values per row for dγ
T_INPUT = 256
BATCHES = (1, 64, 512)
VARIANT_NAMES = ("tiny", "base")
STAGE_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class Kernel:
    name: str
    flops: float
    bytes: float

    def seconds(self, launch: bool = True) -> float:
        return max(self.flops / BF16_FLOP_PER_S, self.bytes / HBM_BYTES_PER_S) + (LAUNCH_S if launch else 0.0)

    def compute_bound(self) -> bool:
        return self.flops / BF16_FLOP_PER_S > self.bytes / HBM_BYTES_PER_S


def dwconv_layernorm_kernels(m: int, c: int) -> dict[str, list[Kernel]]:
    """Per-element byte counts: e = bf16 element; dy is fp32 (4 B) in the fused backward."""
    a, e, w = m * c, ELEMENT, 10 * c * ELEMENT  # 7 taps + conv bias + LN weight and bias
    conv_flops, ln_flops = 2 * 7 * a, 8 * a
    return {
        "eager fwd": [
            Kernel("conv1d", conv_flops, 2 * a * e + w),
            Kernel("layer_norm", ln_flops, 2 * a * e + STATS * m),
        ],
        "fused fwd": [Kernel("dwconv_layernorm_fwd", conv_flops + ln_flops, 2 * a * e + STATS * m + w)],
        "eager bwd": [
            Kernel("layer_norm_backward", 2 * ln_flops, 3 * a * e + STATS * m),
            Kernel("conv1d_backward_input", conv_flops, 2 * a * e),
            Kernel("conv1d_backward_weight", conv_flops, 2 * a * e),
        ],
        "fused bwd": [
            # recomputes the conv; reads x, dout, stats; writes dy in fp32
            Kernel("bwd_norm", conv_flops + 2 * ln_flops, 2 * a * e + 4 * a + STATS * m),
            Kernel("bwd_conv", 2 * conv_flops, 4 * a + 2 * a * e),
        ],
    }


def bottleneck_kernels(m: int, c: int) -> dict[str, list[Kernel]]:
    """GEMM FLOPs 2·M·C·4C each; e = bf16 element; weights 2 × 4C² elements. "fused fwd" is the design
    the Triton op uses at this width: the fused MLP up to FUSED_MLP_MAX_C, two GEMMs above."""
    seqs = _bottleneck_sequences(m, c)
    seqs["fused fwd"] = seqs["fused-MLP fwd" if c <= FUSED_MLP_MAX_C else "two-GEMM fwd"]
    return seqs


def _bottleneck_sequences(m: int, c: int) -> dict[str, list[Kernel]]:
    a, e, h = m * c, ELEMENT, 4 * m * c
    gemm, w1 = 8 * m * c * c, 4 * c * c * ELEMENT
    z = a if TRAINING_KEEPS_Z else 0
    return {
        "eager fwd": [
            Kernel("addmm fc1", gemm, (a + h) * e + w1),
            Kernel("gelu", 8 * h, 2 * h * e),
            Kernel("addmm fc2", gemm, (h + a) * e + w1),
            Kernel("mul gamma", a, 2 * a * e),
            Kernel("add residual", a, 3 * a * e),
        ],
        "two-GEMM fwd": [
            Kernel("gemm_bias_gelu", gemm + 8 * h, (a + h) * e + w1),
            # + z (C per row), kept for dγ when training
            Kernel("gemm_bias_residual", gemm + 3 * a, (h + 3 * a + z) * e + w1),
        ],
        # weights re-read per row tile from L2, not HBM: counted once
        "fused-MLP fwd": [Kernel("fused_mlp", 2 * gemm + 8 * h, (3 * a + z) * e + 2 * w1)],
        "eager bwd": [
            Kernel("mul grad (dout·γ)", a, 2 * a * e),
            Kernel("dγ reduction", 2 * a, 2 * a * e),
            Kernel("mm dh = g W2", gemm, (a + h) * e + w1),
            Kernel("mm dW2 = gᵀh", gemm, (a + h) * e + w1),
            Kernel("sum db2", a, a * e),
            Kernel("gelu_backward", 12 * h, 3 * h * e),
            Kernel("mm dn = da W1", gemm, (h + a) * e + w1),
            Kernel("mm dW1 = daᵀn", gemm, (h + a) * e + w1),
            Kernel("sum db1", h, h * e),
        ],
        "fused bwd": [
            Kernel("branch_grad", 4 * a, 3 * a * e),
            Kernel("bwd_hidden (recompute)", 2 * gemm + 20 * h, (2 * a + 2 * h) * e + 2 * w1),
            Kernel("mm dW2 = gᵀh", gemm, (a + h) * e + w1),
            Kernel("mm dn = da W1", gemm, (h + a) * e + w1),
            Kernel("mm dW1 = daᵀn", gemm, (h + a) * e + w1),
            Kernel("sum db1", h, h * e),
        ],
    }


def total(kernels: list[Kernel], launch: bool = True) -> tuple[float, float, float]:
    return (
        sum(k.flops for k in kernels),
        sum(k.bytes for k in kernels),
        sum(k.seconds(launch) for k in kernels),
    )


def speedup(
    seqs: dict[str, list[Kernel]], direction: str, launch: bool = True, fused: str | None = None
) -> float:
    return (
        total(seqs[f"eager {direction}"], launch)[2] / total(seqs[fused or f"fused {direction}"], launch)[2]
    )


def stage_shapes():
    for variant in VARIANT_NAMES:
        dims, depths = VARIANTS[variant]
        for stage, (c, depth, stride) in enumerate(zip(dims, depths, STAGE_STRIDES, strict=True), start=1):
            for b in BATCHES:
                yield variant, stage, c, depth, b, b * (T_INPUT // stride)


def op_table(name: str, kernels_of, direction: str, extra: tuple[str, ...] | None = None) -> list[str]:
    head = "| variant | stage | C | B | M | GFLOP | MB eager | MB fused | µs eager | µs fused | fused bound | speedup | speedup w/o launch |"
    cols = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
    if extra:
        head += " µs two-GEMM | µs fused-MLP |"
        cols += "---:|---:|"
    lines = [f"### {name}, {direction}", "", head, cols]
    for variant, stage, c, _depth, b, m in stage_shapes():
        seqs = kernels_of(m, c)
        flops, eager_bytes, eager_s = total(seqs[f"eager {direction}"])
        fused = seqs[f"fused {direction}"]
        _, fused_bytes, fused_s = total(fused)
        bound = "compute" if any(k.compute_bound() for k in fused) else "memory"
        row = (
            f"| {variant} | {stage} | {c} | {b} | {m} | {flops / 1e9:.3f} | {eager_bytes / 1e6:.2f} |"
            f" {fused_bytes / 1e6:.2f} | {eager_s * 1e6:.1f} | {fused_s * 1e6:.1f} | {bound} | {eager_s / fused_s:.2f}× |"
            f" {speedup(seqs, direction, launch=False):.2f}× |"
        )
        if extra:
            row += "".join(f" {total(seqs[k])[2] * 1e6:.1f} |" for k in extra)
        lines.append(row)
    return [*lines, ""]


def model_summary() -> list[str]:
    """All blocks of a variant (the fused ops' share of the network), eager vs fused, fwd and fwd+bwd."""
    lines = [
        "| variant | B | blocks fwd µs eager | fused | speedup | blocks fwd+bwd µs eager | fused | speedup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANT_NAMES:
        for b in BATCHES:
            acc = {"eager fwd": 0.0, "fused fwd": 0.0, "eager bwd": 0.0, "fused bwd": 0.0}
            for v, _stage, c, depth, bb, m in stage_shapes():
                if v != variant or bb != b:
                    continue
                for seqs in (dwconv_layernorm_kernels(m, c), bottleneck_kernels(m, c)):
                    for key in acc:
                        acc[key] += depth * total(seqs[key])[2]
            fwd_e, fwd_f = acc["eager fwd"], acc["fused fwd"]
            all_e, all_f = fwd_e + acc["eager bwd"], fwd_f + acc["fused bwd"]
            lines.append(
                f"| {variant} | {b} | {fwd_e * 1e6:.0f} | {fwd_f * 1e6:.0f} | {fwd_e / fwd_f:.2f}× |"
                f" {all_e * 1e6:.0f} | {all_f * 1e6:.0f} | {all_e / all_f:.2f}× |"
            )
    return [*lines, ""]


def speedup_range(kernels_of, direction: str, launch: bool, batches=BATCHES, fused: str | None = None) -> str:
    values = [
        speedup(kernels_of(m, c), direction, launch, fused)
        for _v, _s, c, _d, b, m in stage_shapes()
        if b in batches
    ]
    low, high = f"{min(values):.2f}", f"{max(values):.2f}"
    return f"{low}×" if low == high else f"{low}–{high}×"


def findings() -> list[str]:
    """The conclusions, with their numbers taken from the model so prose and tables cannot disagree."""
    dw, bn, big = dwconv_layernorm_kernels, bottleneck_kernels, (64, 512)
    return [
        f"- **dwconv + LayerNorm forward** is memory-bound everywhere; fusion halves its HBM bytes (x read"
        f" once, no conv-output round trip): {speedup_range(dw, 'fwd', False, big)} on bytes alone at B ≥ 64.",
        f"- **dwconv + LayerNorm backward** does *not* win on bytes ({speedup_range(dw, 'bwd', False, big)}"
        " without launch latency at B ≥ 64): the deterministic two-kernel design writes and re-reads dy in fp32,",
        "  because dx needs dy of rows another program owns. It saves one launch. Storing dy in bf16, or one",
        "  kernel recomputing a halo, is the next step if a GPU profile shows this op matters.",
        f"- **Bottleneck forward**: the op runs one fused-MLP kernel for C ≤ {FUSED_MLP_MAX_C} (the hidden"
        " activation never leaves the chip) and two GEMMs with fused epilogues above, where the GEMMs are"
        f" compute-bound. On the roofline at B ≥ 64: {speedup_range(bn, 'fwd', False, big)} over eager; two GEMMs"
        f" alone would give {speedup_range(bn, 'fwd', False, big, 'two-GEMM fwd')} and a fused MLP at every width"
        f" {speedup_range(bn, 'fwd', False, big, 'fused-MLP fwd')} — but past C ≈ 256 its [BLOCK_M, C] fp32"
        " accumulator no longer fits in registers, and there the hidden round trip costs little anyway.",
        f"- **Bottleneck backward** recomputes the hidden activation (40 vs 32·M·C² GEMM FLOPs) to keep 8·C values"
        f" per row out of memory between forward and backward: {speedup_range(bn, 'bwd', False, big)} on the"
        " roofline at B ≥ 64, falling toward 1× where the GEMMs are compute-bound (the recompute's price).",
        f"- At **B = 1** (live inference) kernels are latency-bound: the predicted gain "
        f"({speedup_range(bn, 'fwd', True, (1,))} for the bottleneck forward) is the kernel count; CUDA graphs"
        " (or the C++ CPU path) matter more there than fusion.",
        "",
    ]


def render() -> str:
    lines = [
        "# Fused Triton ops: roofline performance model (H100)",
        "",
        "Generated by `python scripts/gpu_perf_model.py` (do not edit by hand). **A model, not a measurement**:",
        f"each kernel takes max(FLOPs / {BF16_FLOP_PER_S / 1e12:.0f} TFLOP/s, bytes / {HBM_BYTES_PER_S / 1e12:.1f} TB/s)"
        f" + {LAUNCH_S * 1e6:.0f} µs launch latency; bf16 storage; bytes are the minimum each kernel must move",
        "(inputs read once, outputs written once, weights once). Eager = the PyTorch op sequence of the",
        f"reference block. Shapes: `tiny` and `base` stages at T = {T_INPUT} input bars (stage T' = T/4 … T/32),",
        "M = B·T' rows. Speedup = eager time / fused time: the most the fusion can buy.",
        "",
        "## Whole network's blocks (Σ depth × per-block time)",
        "",
        *model_summary(),
        "## What the model says",
        "",
        *findings(),
        "## Per op and stage",
        "",
    ]
    for direction in ("fwd", "bwd"):
        lines += op_table("dwconv + LayerNorm", dwconv_layernorm_kernels, direction)
        extra = ("two-GEMM fwd", "fused-MLP fwd") if direction == "fwd" else None
        lines += op_table("GELU bottleneck", bottleneck_kernels, direction, extra)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "docs" / "gpu_performance.md"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
