"""Turn pytest-benchmark JSON into a markdown table: one row per benchmark, grouped, with the minimum and
median time and the ratio of each row's minimum to the best peer's minimum in its group (1.00 = fastest).

    python scripts/bench_table.py bench.json [more.json ...] > table.md
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
