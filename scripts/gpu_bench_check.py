"""Time the fused Triton ops on a GPU beside the performance model, as one markdown table (run by
scripts/gpu_check.sh; needs CUDA).

    python scripts/gpu_bench_check.py --out results.md [--quick]

Bottleneck forward, bf16, at C = 96, 192, 256, 384 (the stage T' of tiny/base at T = 256 bars) and B = 512
and 1: the fused MLP (C ≤ 256), the two Triton GEMMs, the design the op picks, and eager PyTorch; then
dwconv + LayerNorm forward and forward+backward against eager. Per case two times: ``gpu µs`` =
``triton.testing.do_bench`` median (CUDA events over back-to-back calls) and ``call µs`` = median wall
time of one call followed by ``torch.cuda.synchronize()`` (what a caller waits for, launches included);
``model µs`` = scripts/gpu_perf_model.py's prediction for the same kernel sequence.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

CASES = [(96, 64), (192, 32), (256, 32), (384, 16)]  # (C, T' = rows per sample at T = 256 input bars)
BATCHES = (512, 1)
DTYPE = torch.bfloat16


def call_us(fn, repeats: int) -> float:
    """Median wall time of one synchronised call."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def bottleneck_inputs(b: int, t: int, c: int) -> list[torch.Tensor]:
    h = 4 * c
    shapes = [(b, t, c), (b, t, c), (h, c), (h,), (c, h), (c,), (c,)]
    scales = [1, 1, c**-0.5, 1, h**-0.5, 1, 1]
    return [(torch.randn(s) * k).to("cuda", DTYPE) for s, k in zip(shapes, scales, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench_check: no CUDA device; nothing timed", file=sys.stderr)
        return 2
    import gpu_perf_model as model
    import triton

    from convnext_fast.ops.bottleneck import triton as bn
    from convnext_fast.ops.bottleneck.reference import bottleneck as bottleneck_reference
    from convnext_fast.ops.dwconv_layernorm.reference import dwconv_layernorm as dwconv_reference
    from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm as dwconv_triton

    repeats = 20 if args.quick else 100
    rows = [
        f"GPU: {torch.cuda.get_device_name()} · torch {torch.__version__} · triton {triton.__version__} · bf16",
        "",
        "| op | C | B | M | implementation | gpu µs | call µs | model µs |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]

    def row(op, c, b, m, name, fn, predicted_s):
        fn()  # autotune / compile outside the timing
        torch.cuda.synchronize()
        gpu = triton.testing.do_bench(fn, return_mode="median") * 1e3
        rows.append(
            f"| {op} | {c} | {b} | {m} | {name} | {gpu:.1f} | {call_us(fn, repeats):.1f} |"
            f" {predicted_s * 1e6:.1f} |"
        )
        print(rows[-1], flush=True)

    real_choice = bn.use_fused_mlp
    for c, t in CASES:
        for b in BATCHES:
            m = b * t
            inputs = bottleneck_inputs(b, t, c)
            seqs = model.bottleneck_kernels(m, c)
            with torch.no_grad():
                designs = [("op's choice", real_choice, seqs["fused fwd"])]
                if c <= 256:
                    designs.append(("fused MLP", lambda *a: True, seqs["fused-MLP fwd"]))
                designs.append(("two GEMMs", lambda *a: False, seqs["two-GEMM fwd"]))
                for name, choice, kernels in designs:
                    bn.use_fused_mlp = choice
                    try:
                        row(
                            "bottleneck fwd",
                            c,
                            b,
                            m,
                            name,
                            lambda inputs=inputs: bn.bottleneck(*inputs),
                            model.seconds(kernels),
                        )
                    finally:
                        bn.use_fused_mlp = real_choice
                row(
                    "bottleneck fwd", c, b, m, "eager", lambda inputs=inputs: bottleneck_reference(*inputs),
                    model.seconds(seqs["eager fwd"]),
                )  # fmt: skip
            x = torch.randn(b, t, c, device="cuda", dtype=DTYPE)
            params = [torch.randn(c, 1, 7) * 0.3, torch.randn(c), torch.randn(c), torch.randn(c)]
            dw_in = [x, *(p.to("cuda", DTYPE) for p in params)]
            dseqs = model.dwconv_layernorm_kernels(m, c)
            for impl, fn in (("triton", dwconv_triton), ("eager", dwconv_reference)):
                side = "fused" if impl == "triton" else "eager"
                with torch.no_grad():
                    row(
                        "dwconv+LN fwd",
                        c,
                        b,
                        m,
                        impl,
                        lambda fn=fn, dw_in=dw_in: fn(*dw_in, 1e-6),
                        model.seconds(dseqs[f"{side} fwd"]),
                    )
                leaves = [p.detach().requires_grad_() for p in dw_in]
                grad = torch.randn_like(x)

                def step(fn=fn, leaves=leaves, grad=grad):
                    return torch.autograd.grad(fn(*leaves, 1e-6), leaves, grad)

                row(
                    "dwconv+LN fwd+bwd", c, b, m, impl, step,
                    model.seconds(dseqs[f"{side} fwd"] + dseqs[f"{side} bwd"]),
                )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(rows) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
