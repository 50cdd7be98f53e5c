"""Ahead-of-time compile every Triton kernel × every autotune config for sm_80 and sm_90 — no GPU needed —
and check the machine code: registers, shared memory and local memory (spills) from the ``cuobjdump``
shipped in triton's wheel, and tensor-core instructions (HMMA / HGMMA) in the SASS of the fp16/bf16 GEMMs.

Also compiles the fused MLP at BLOCK_C = 8, which ``tl.dot`` rejects (K < 16), and expects that to fail:
the op's guard (``use_fused_mlp``) must send such widths to the two-GEMM kernels, and the smallest width
it lets through (BLOCK_C = 16) is in the table.

Prints the markdown table, or writes it to ``--out FILE``; only ``--update-docs`` rewrites the tracked
``docs/gpu_kernels.md``. Exits 1 on any spill, shared memory over the target's limit, register
count over 255, an fp16/bf16 GEMM without tensor-core instructions, a compile failure, or a guard case
that compiles after all (or that the guard lets through).

    python scripts/gpu_aot_check.py [--out runs/gpu_kernels.md | --update-docs] [--jobs N]
    python scripts/gpu_aot_check.py --quick --out /tmp/k.md   # CI: bf16, sm_90, one config per kernel

Runs in its own process with TRITON_INTERPRET unset: interpreted kernels cannot be compiled.
"""

from __future__ import annotations

import os

os.environ.pop("TRITON_INTERPRET", None)  # before triton decorates the kernels
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the runtime default; silences Triton 3.9's notice

import argparse
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from convnext_fast.ops.bottleneck import triton_kernels as bottleneck_kernels
from convnext_fast.ops.dwconv_layernorm import triton_kernels as dwconv_kernels
from convnext_fast.ops.triton_utils import reduce_rows

TARGETS = {"sm_80": GPUTarget("cuda", 80, 32), "sm_90": GPUTarget("cuda", 90, 32)}
SHARED_LIMIT = {"sm_80": 166_912, "sm_90": 232_448}  # max dynamic shared memory per block (opt-in)
MAX_REGISTERS = 255
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
DOC = Path(__file__).resolve().parents[1] / "docs" / "gpu_kernels.md"  # tracked: only --update-docs writes it
TENSOR_CORE_OPS = re.compile(r"\b(HGMMA|HMMA)\.(\w+)")
SPILL_OPS = re.compile(r"\b(STL|LDL)\b")
# Channel widths the row kernels are compiled for: tiny's first stage (96 → 128) and base's last (1024);
# the fused MLP runs for 16 ≤ BLOCK_C ≤ 256 (BLOCK_C = 8 is the guard's expected compile failure).
ROW_BLOCK_C = (128, 1024)
FUSED_MLP_BLOCK_C = (16, 128, 256)
GUARD_BLOCK_C = 8
DTYPES = ("bf16", "fp16", "fp32")
ALIGNED_SIZES = {"C", "N", "K", "H"}


@dataclass(frozen=True)
class KernelSpec:
    """How to compile one autotuned kernel: argument types (``{dt}`` = storage dtype) and constexprs."""

    name: str
    tuned: object  # triton.runtime.Autotuner
    args: dict[str, str]
    constexprs: dict
    is_gemm: bool
    dtypes: tuple[str, ...] = ("bf16", "fp16", "fp32")
    reduce_budget: int = 0  # row kernels: max values per thread, for REDUCE_T (fixed by BLOCK_C and dtype)
    expect_failure: str = ""  # why this compile must fail (a shape the op's guard keeps away)

    def constexprs_for(self, dtype: str) -> dict:
        if not self.reduce_budget:
            return dict(self.constexprs)
        rows = reduce_rows(self.constexprs["BLOCK_C"], ELEMENT_SIZE[dtype], self.reduce_budget)
        return {**self.constexprs, "REDUCE_T": rows}


def _pointers(names: str, dtype: str = "{dt}") -> dict[str, str]:
    return {n: f"*{dtype}" for n in names.split()}


def _ints(names: str) -> dict[str, str]:
    return {n: "i32" for n in names.split()}


def kernel_specs() -> list[KernelSpec]:
    dw, bn = dwconv_kernels, bottleneck_kernels
    specs = []
    for block_c in ROW_BLOCK_C:
        row = {"K": 7, "BLOCK_C": block_c}
        specs += [
            KernelSpec(
                "dwconv_layernorm_fwd",
                dw.dwconv_layernorm_fwd_kernel,
                {**_pointers("x_ptr w_ptr cb_ptr nw_ptr nb_ptr out_ptr"), **_pointers("mean_ptr rstd_ptr", "fp32"),
                 **_ints("T C T_BUCKET"), "inv_c": "fp32", "eps": "fp32"},
                row,
                False,
                reduce_budget=dw.MAX_PER_THREAD,
            ),
            KernelSpec(
                "dwconv_layernorm_bwd_norm",
                dw.dwconv_layernorm_bwd_norm_kernel,
                {**_pointers("x_ptr w_ptr cb_ptr nw_ptr dout_ptr"),
                 **_pointers("mean_ptr rstd_ptr dy_ptr partial_ptr", "fp32"),
                 **_ints("T C T_BUCKET rows_per_chunk"), "inv_c": "fp32"},
                row,
                False,
                reduce_budget=dw.BWD_NORM_MAX_PER_THREAD,
            ),
            KernelSpec(
                "dwconv_layernorm_bwd_conv",
                dw.dwconv_layernorm_bwd_conv_kernel,
                {**_pointers("x_ptr w_ptr dx_ptr"), **_pointers("dy_ptr partial_ptr", "fp32"),
                 **_ints("T C T_BUCKET rows_per_chunk")},
                {**row, "BLOCK_K": 8},
                False,
                reduce_budget=dw.BWD_CONV_MAX_PER_THREAD,
            ),
            KernelSpec(
                "bottleneck_branch_grad",
                bn.branch_grad_kernel,
                {**_pointers("dout_ptr gamma_ptr scale_ptr z_ptr g_ptr"), **_pointers("partial_ptr", "fp32"),
                 **_ints("M C rows_per_sample rows_per_chunk")},
                {"HAS_SCALE": True, "BLOCK_C": block_c},
                False,
                reduce_budget=bn.BRANCH_GRAD_MAX_PER_THREAD,
            ),
        ]  # fmt: skip
    fused_args = {
        **_pointers("n_ptr w1_ptr b1_ptr w2_ptr b2_ptr gamma_ptr scale_ptr res_ptr out_ptr z_ptr"),
        **_ints("M C H M_BUCKET rows_per_sample"),
    }
    specs += [
        KernelSpec(
            "bottleneck_fused_mlp",
            bn.fused_mlp_kernel,
            fused_args,
            {"HAS_SCALE": True, "STORE_Z": True, "BLOCK_C": block_c},
            True,
            ("bf16", "fp16"),  # fp32 takes the two-GEMM path
        )
        for block_c in FUSED_MLP_BLOCK_C
    ]
    specs.append(
        KernelSpec(
            "bottleneck_fused_mlp (guard)",
            bn.fused_mlp_kernel,
            fused_args,
            {"HAS_SCALE": True, "STORE_Z": True, "BLOCK_C": GUARD_BLOCK_C},
            True,
            ("bf16", "fp16"),
            expect_failure=f"tl.dot needs K ≥ 16; use_fused_mlp sends BLOCK_C = {GUARD_BLOCK_C} to two GEMMs",
        )
    )
    specs += [
        KernelSpec(
            "bottleneck_gemm_bias_gelu",
            bn.gemm_bias_gelu_kernel,
            {**_pointers("a_ptr w_ptr bias_ptr out_ptr"), **_ints("M N K M_BUCKET")},
            {},
            True,
        ),
        KernelSpec(
            "bottleneck_gemm_bias_residual",
            bn.gemm_bias_residual_kernel,
            {**_pointers("a_ptr w_ptr bias_ptr gamma_ptr scale_ptr res_ptr out_ptr z_ptr"),
             **_ints("M N K M_BUCKET rows_per_sample")},
            {"HAS_SCALE": True, "STORE_Z": True},
            True,
        ),
        KernelSpec(
            "bottleneck_bwd_hidden",
            bn.bwd_hidden_kernel,
            {**_pointers("a_ptr w1_ptr b1_ptr g_ptr w2_ptr h_ptr da_ptr"), **_ints("M N K M_BUCKET")},
            {},
            True,
        ),
    ]  # fmt: skip
    return specs


class _Pointer:
    def __init__(self, element_size: int):
        self._size = element_size

    def element_size(self) -> int:
        return self._size


ELEMENT_SIZE = {"bf16": 2, "fp16": 2, "fp32": 4}


def configs_for(spec: KernelSpec, dtype: str) -> list[triton.Config]:
    """The configs the autotuner would consider: the kernel's own pruner decides, as at run time (for a
    large GEMM, so that only the dtype, register and shared-memory rules prune)."""
    pointer = _Pointer(ELEMENT_SIZE[dtype])
    problem = {
        "M": 1 << 16,
        "M_BUCKET": 1 << 16,
        "N": 4096,
        "K": 1024,
        **dict.fromkeys(("a_ptr", "n_ptr", "x_ptr", "dout_ptr"), pointer),
    }
    return spec.tuned.early_config_prune(spec.tuned.configs, problem, **spec.constexprs_for(dtype))


@dataclass
class Job:
    spec_index: int
    config_index: int
    dtype: str
    target: str


def compile_one(job: Job) -> dict:
    spec = kernel_specs()[job.spec_index]
    config = configs_for(spec, job.dtype)[job.config_index]
    fn = spec.tuned.fn
    constexprs = {**spec.constexprs_for(job.dtype), **config.kwargs}
    if spec.is_gemm:
        constexprs["PRECISION"] = "ieee" if job.dtype == "fp32" else "tf32"
    signature = {}
    attrs = {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        else:
            signature[name] = spec.args[name].format(dt=job.dtype)
            # As Triton specialises at run time: torch allocations are 16-byte aligned, and the sizes
            # in ALIGNED_SIZES are multiples of 16 for every tiny..base width (96..1024, hidden 4C).
            if signature[name].startswith("*") or name in ALIGNED_SIZES:
                attrs[(i,)] = [["tt.divisibility", 16]]
    source = ASTSource(fn, signature=signature, constexprs=constexprs, attrs=attrs)
    start = time.perf_counter()
    row = {
        "kernel": spec.name,
        "dtype": job.dtype,
        "target": job.target,
        "config": ", ".join(f"{k}={v}" for k, v in constexprs.items() if k not in ("K", "PRECISION"))
        + f", warps={config.num_warps}, stages={config.num_stages}",
        "is_gemm": spec.is_gemm,
        "expect_failure": spec.expect_failure,
        "error": "",
    }
    try:
        compiled = triton.compile(
            source,
            target=TARGETS[job.target],
            options={"num_warps": config.num_warps, "num_stages": config.num_stages},
        )
    except Exception as exc:  # any compiler error: recorded, judged by problems()
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return {**row, "error": first[:160], "seconds": time.perf_counter() - start}
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = run_tool("cuobjdump", "--dump-resource-usage", str(cubin))
        sass = run_tool("cuobjdump", "-sass", str(cubin))
    resources = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage)}
    mma = sorted({f"{op}.{shape}" for op, shape in TENSOR_CORE_OPS.findall(sass)})
    # Register spills are local-memory stores/loads in the SASS; STACK alone can be a call frame.
    spills = len(SPILL_OPS.findall(sass))
    return {
        **row,
        "registers": resources.get("REG", -1),
        "shared": max(compiled.metadata.shared, resources.get("SHARED", 0)),
        "local": resources.get("LOCAL", -1),
        "stack": resources.get("STACK", -1),
        "spills": spills,
        "mma": " ".join(mma) or "—",
        "seconds": seconds,
    }


def run_tool(tool: str, *args: str) -> str:
    result = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def problems(row: dict) -> list[str]:
    if row["expect_failure"]:
        return [] if row["error"] else [f"compiled, but expected to fail ({row['expect_failure']})"]
    if row["error"]:
        return [f"compile error: {row['error']}"]
    found = []
    if row["local"] != 0 or row["spills"] != 0:
        found.append(f"spills ({row['spills']} STL/LDL instructions, LOCAL={row['local']})")
    if row["shared"] > SHARED_LIMIT[row["target"]]:
        found.append(f"shared memory {row['shared']} B > {SHARED_LIMIT[row['target']]} B")
    if not 0 < row["registers"] <= MAX_REGISTERS:
        found.append(f"registers {row['registers']}")
    if row["is_gemm"] and row["dtype"] != "fp32" and row["mma"] == "—":
        found.append("no tensor-core (HMMA/HGMMA) instructions in an fp16/bf16 GEMM")
    return found


def all_jobs(
    dtypes: tuple[str, ...],
    kernels: tuple[str, ...] | None = None,
    targets: tuple[str, ...] = tuple(TARGETS),
    first_config_only: bool = False,
) -> list[Job]:
    return [
        Job(s, c, dtype, target)
        for s, spec in enumerate(kernel_specs())
        if kernels is None or spec.name in kernels
        for dtype in dtypes
        if dtype in spec.dtypes
        for c in range(1 if first_config_only or spec.expect_failure else len(configs_for(spec, dtype)))
        for target in targets
    ]


def render_markdown(rows: list[dict], wall: float) -> str:
    lines = [
        "# Triton kernels: ahead-of-time compile check",
        "",
        "Generated by `python scripts/gpu_aot_check.py --update-docs` (do not edit by hand).",
        "Every kernel × every autotune",
        "config its pruner keeps × storage dtype, compiled with `triton.compile(ASTSource(...))` for",
        '`GPUTarget("cuda", 80, 32)` (A100) and `GPUTarget("cuda", 90, 32)` (H100) on a machine without a GPU;',
        "resources read with the `cuobjdump --dump-resource-usage` shipped in triton's wheel, tensor-core",
        "instructions counted in `cuobjdump -sass`. Row kernels are compiled for BLOCK_C = 128 (tiny stage 1)",
        "and 1024 (base stage 4), the fused MLP for BLOCK_C = 16 (the narrowest its guard admits), 128 and 256,",
        "and at BLOCK_C = 8, where it must fail to compile (`tl.dot` needs K ≥ 16). Pointers and C, N, K, H",
        "carry Triton's divisible-by-16 specialisation, as at run time for every tiny..base width; a width like",
        "atto's 40 compiles without it (unvectorised, unpipelined loads: slower, and not checked here). fp32",
        "GEMMs use IEEE fp32 FMA on purpose (the ≤1e-5 contract; TF32 would give ~1e-3), so they show no",
        "tensor-core instructions; the fused MLP runs only for fp16/bf16.",
        "",
        "## Run-time choices",
        "",
        "- **dtype**: the ops compute in `compute_dtype(x)`: the autocast dtype under autocast (CUDA autocast's",
        "  LayerNorm hands stage 0 fp32 activations; without this they ran IEEE fp32 dots), else x's dtype; the",
        "  residual and the bottleneck's output keep x's dtype, the dwconv + LayerNorm output is the compute dtype.",
        "- **bottleneck design**: `use_fused_mlp(M, C, element size)`: 16-bit, 16 ≤ BLOCK_C ≤ 256 (`tl.dot`",
        "  rejects dimensions < 16: see the guard row), and where docs/gpu_performance.md's model predicts a win",
        "  over two GEMMs (always for C ≤ 128; up to M·C² ≈ 3·10⁸ at C = 129–256); else two GEMMs.",
        "- **autotuning**: keys are powers of two of M / T (`bucket`); results persist in `TRITON_CACHE_DIR`",
        "  (`cache_results=True`); with `torch.use_deterministic_algorithms(True)` no timing at all: the first",
        "  config the pruner keeps.",
        "- **reproducible reductions**: row kernels use `[REDUCE_T, BLOCK_C]` tiles and a warp count fixed by",
        "  (BLOCK_C, dtype); only SUBTILES (tiles per loop step) is tuned, and tiles are summed in row order;",
        "  backward partials cover fixed 64-row chunks. Bits do not depend on the tuned config or on B.",
        "- **grids** put the batch on axis 0 (CUDA allows 2³¹ − 1 there, 65,535 on axes 1 and 2), so",
        "  B > 65,535 launches; the bottleneck's grids are 1-D over row tiles.",
        "",
        "## What is verified, and where",
        "",
        "| check | how | where it runs |",
        "|---|---|---|",
        "| numerics fp32 / fp16, forward + backward, ragged T, C = 8/40/100, drop path, whole model |"
        " `TRITON_INTERPRET=1` on CPU tensors vs a float64 reference (fp32 ≤ 1e-5, fp16 ≤ 5e-3 relative) |"
        " CI: `tests/ops/test_*_triton.py` |",
        "| autocast: dtype decision (CUDA autocast mocked), fp16 CPU-autocast numerics through both ops;"
        " bitwise-equal outputs and gradients across row-kernel configs and batch sizes; 1-D grids at"
        " B = 70,000; deterministic mode's config rule | interpreter, and the dispatch code with launches"
        " recorded | CI: `tests/ops/test_triton_dispatch.py` |",
        "| compilation, registers, shared memory, spills, tensor-core use; the fused MLP's `tl.dot` guard"
        " (BLOCK_C = 8 must not compile, 16 must) | this table | CI: `tests/scripts/test_gpu_aot.py`"
        " (`--quick`: bf16, sm_90, one config per kernel); this table: every config, both targets |",
        "| CUDA-graph session's bookkeeping (static buffers, shapes, re-capture) | capture replaced by a recorder |"
        " CI: `tests/gpu/test_gpu_session_logic.py` |",
        "| bf16; `tl.dot` at its hardware precision; compiled code paths; bf16 autocast through the model;"
        " gradient bits across processes; B = 70,000; the CUDA-graph session; `torch.compile` tracing |"
        " `tests/gpu/` | only with CUDA (**not run**: no GPU lent yet) |",
        "| speed | `scripts/gpu_check.sh` (one table, model beside), `benchmarks/bench_gpu.py`; model in"
        " `docs/gpu_performance.md` | only with CUDA: **not measured** |",
        "",
        "The interpreter runs `tl.dot` as an fp32 numpy matmul, so it cannot show tensor-core rounding (fp16/bf16",
        "inputs with fp32 accumulation) and it mishandles bf16 (numpy has no bf16), so bf16 numerics and the",
        "compiled kernels' dot precision are verified only by `tests/gpu/` on a GPU. It also ignores",
        "`num_warps`, layouts, pipelining and the autotuner (it runs one fixed config), which this table covers",
        "for resources but not for timing; and it does not enforce `tl.dot`'s minimum shapes, which the guard",
        "row below does.",
        "",
        "## Compile results",
        "",
        f"Triton {triton.__version__}; {len(rows)} compilations in {wall:.0f} s. Limits: registers ≤ {MAX_REGISTERS},",
        "no spills (no STL/LDL local-memory instructions in the SASS, LOCAL = 0; STACK is listed but",
        "allowed: a call frame of a libdevice subroutine is not a spill), dynamic shared memory ≤",
        f"{SHARED_LIMIT['sm_80']} B (sm_80) / {SHARED_LIMIT['sm_90']} B (sm_90).",
        "",
        "| kernel | dtype | target | config | regs | shared B | local | stack | STL/LDL | tensor-core ops | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        status = "; ".join(problems(r)) or "ok"
        if r["error"]:
            note = "expected: " + r["expect_failure"] if r["expect_failure"] else r["error"]
            lines.append(
                f"| {r['kernel']} | {r['dtype']} | {r['target']} | {r['config']} | — | — | — | — | — | — |"
                f" {status}: does not compile ({note}) |"
            )
            continue
        lines.append(
            f"| {r['kernel']} | {r['dtype']} | {r['target']} | {r['config']} | {r['registers']} | {r['shared']} |"
            f" {r['local']} | {r['stack']} | {r['spills']} | {r['mma']} | {status} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--update-docs", action="store_true", help=f"write {DOC.relative_to(DOC.parents[1])}")
    where.add_argument("--out", type=Path, help="write the table to this file (default: print it)")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES), help="storage dtypes")
    names = sorted({spec.name for spec in kernel_specs()})
    parser.add_argument("--kernels", nargs="+", choices=names, help="only these kernels (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes")
    parser.add_argument(
        "--quick", action="store_true", help="sm_90 only, one config per kernel (the first its pruner keeps)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    for tool in ("cuobjdump", "ptxas"):
        if not (BIN / tool).is_file():
            print(
                f"error: {tool} not found in {BIN} (triton wheel without the NVIDIA tools?)", file=sys.stderr
            )
            return 1
    start = time.perf_counter()
    jobs = all_jobs(
        tuple(args.dtypes),
        tuple(args.kernels) if args.kernels else None,
        ("sm_90",) if args.quick else tuple(TARGETS),
        first_config_only=args.quick,
    )
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(compile_one, jobs))
    wall = time.perf_counter() - start
    text = render_markdown(rows, wall)
    out = DOC if args.update_docs else args.out
    if out is None:
        print(text)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    failed = [(r, p) for r in rows if (p := problems(r))]
    for r, p in failed:
        print(
            f"FAIL {r['kernel']} {r['dtype']} {r['target']} [{r['config']}]: {'; '.join(p)}", file=sys.stderr
        )
    where_to = f"table in {out}" if out is not None else "table above"
    print(f"{len(rows)} compilations, {len(failed)} failing, {wall:.0f} s; {where_to}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
