"""Turn pytest-benchmark JSON into a markdown table: one row per benchmark, grouped, with the minimum and
median time and the ratio of each row's minimum to the best peer's minimum in its group (1.00 = fastest),
then every performance target of issue 15 that the files hold data for, met or missed.

    python scripts/bench_table.py bench.json [more.json ...] > table.md

A saved baseline: ``pytest benchmarks/... --benchmark-only --benchmark-save=NAME`` stores the run under
``.benchmarks/``; ``--benchmark-compare`` (latest) or ``--benchmark-compare=NNNN`` prints a later run
beside it, and ``--benchmark-compare-fail=min:10%`` fails when a benchmark got 10% slower. The saved files
are pytest-benchmark JSON, so this script reads them too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path


def impl_name(bench: dict) -> str:
    params = bench.get("params") or {}
    if "n" in params:
        return f"N={params['n']}"
    for key in ("impl", "backend"):
        if key in params:
            return str(params[key])
    match = re.search(r"\[(.*)\]", bench["name"])
    return match.group(1) if match else bench["name"]


def fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def table(benchmarks: list[dict]) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for bench in benchmarks:
        groups[bench.get("group") or bench["name"]].append(bench)
    lines = ["| group | impl | min | median | rounds | ratio vs best |", "|---|---|---:|---:|---:|---:|"]
    for group, rows in groups.items():
        best = min(row["stats"]["min"] for row in rows)
        for row in sorted(rows, key=lambda r: r["stats"]["min"]):
            stats = row["stats"]
            lines.append(
                f"| {group} | {impl_name(row)} | {fmt_time(stats['min'])} | {fmt_time(stats['median'])} | "
                f"{stats['rounds']} | {stats['min'] / best:.2f} |"
            )
    return "\n".join(lines)


def _stats(benchmarks: list[dict]) -> dict[tuple[str, str], dict]:
    return {(b.get("group") or b["name"], impl_name(b)): b["stats"] for b in benchmarks}


def targets(benchmarks: list[dict]) -> list[tuple[str, str, str]]:
    """(target, measured, met/missed) for every target of issue 15 whose benchmarks are present."""
    st = _stats(benchmarks)
    rows: list[tuple[str, str, str]] = []

    def ratio_row(label, group, num, den, limit, key="min"):
        if (group, num) in st and (group, den) in st:
            r = st[(group, num)][key] / st[(group, den)][key]
            rows.append((label, f"{r:.2f}× ({key})", "met" if r <= limit else "missed"))

    for variant in ("atto", "tiny"):
        for batch in (32, 128):
            g = f"train step {variant} B={batch}"
            ratio_row(f"{g}: fused ≤ 0.5× eager", g, "fused", "eager", 0.5)
            ratio_row(f"{g}: fused ≤ 0.6× compile", g, "fused", "compile", 0.6)
    ratio_row("tiny B=1 bf16 ≤ 0.4× ORT fp32", "precision tiny B=1", "session-bf16", "onnxruntime", 0.4)
    for variant, limit in (("atto", 4e-3), ("tiny", 40e-3)):
        for precision in ("fp32", "bf16"):
            key = (f"symbols {variant} {precision}", "N=64")
            if key in st:
                t = st[key]["min"]
                rows.append(
                    (
                        f"{variant} N=64 {precision} ≤ {limit * 1e3:g} ms",
                        fmt_time(t),
                        "met" if t <= limit else "missed",
                    )
                )
    for variant in ("atto", "tiny"):
        quiet, loaded = f"model {variant} B=1", f"model {variant} B=1 +cotenant"
        for impl in ("session", "session-snapshot", "session-adaptive"):
            if (quiet, impl) in st and (loaded, impl) in st:
                r = st[(loaded, impl)]["median"] / st[(quiet, impl)]["median"]
                rows.append(
                    (
                        f"{variant} B=1 {impl}: loaded median ≤ 1.5× quiet",
                        f"{r:.2f}×",
                        "met" if r <= 1.5 else "missed",
                    )
                )
            ratio_row(
                f"{variant} B=1 {impl} +cotenant ≤ 0.8× ORT (median)",
                loaded,
                impl,
                "onnxruntime",
                0.8,
                "median",
            )
        if (loaded, "session-1thread") in st and (quiet, "session-snapshot") in st:
            # Not a target: with a co-tenant holding one of two cores, one thread is about the best a
            # session can count on, so this ratio is the floor under the "≤ 1.5× quiet" rows above.
            r = st[(loaded, "session-1thread")]["median"] / st[(quiet, "session-snapshot")]["median"]
            rows.append(
                (f"{variant} B=1 floor: one thread loaded / snapshot quiet (median)", f"{r:.2f}×", "floor")
            )
        if (quiet, "session") in st:
            r = st[(quiet, "session")]["median"] / st[(quiet, "session")]["min"]
            rows.append(
                (
                    f"{variant} B=1 tracking session quiet median ≤ 1.2× min",
                    f"{r:.2f}×",
                    "met" if r <= 1.2 else "missed",
                )
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_files", nargs="+", type=Path, help="pytest-benchmark --benchmark-json output")
    args = parser.parse_args(argv)
    benchmarks = []
    for path in args.json_files:
        if not path.is_file():
            parser.error(f"json_files: {path} does not exist")
        try:
            benchmarks.extend(json.loads(path.read_text())["benchmarks"])
        except (json.JSONDecodeError, KeyError) as exc:
            parser.error(f"json_files: {path} is not pytest-benchmark JSON ({exc})")
    machine = json.loads(args.json_files[0].read_text()).get("machine_info", {})
    print(
        f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, {machine.get('cpu', {}).get('count', '?')} CPUs\n"
    )
    print(table(benchmarks))
    rows = targets(benchmarks)
    if rows:
        print("\n| target | measured | |\n|---|---:|---|")
        for target, measured, met in rows:
            print(f"| {target} | {measured} | {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
