"""Universe training at scale: peak RSS and throughput of ``convnext-fast train --universe synthetic:NxBARS``
for several N, each in its own subprocess (peak RSS from ``getrusage(RUSAGE_CHILDREN)``, which counts the
memory-mapped pages the run touched as well as its own memory).

    python benchmarks/universe_scale.py --symbols 10,50 --bars 43800 -- --variant atto --window 128 \
        --epochs 1 --folds 2 --num-threads 1 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(n: int, bars: int, per_symbol: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "convnext_fast.cli", "train", "--universe", f"synthetic:{n}x{bars}",
               "--out", str(Path(tmp) / "run"), "--no-progress", "--max-windows", str(n * per_symbol), *extra]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"N={n} failed: {done.stderr[-2000:]}")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest child so far
        results = json.loads((Path(tmp) / "run" / "results.json").read_text())
    return {
        "symbols": n,
        "bars": bars,
        "peak_rss_mb": round(peak / 2**20, 1),
        "train_samples_per_s": round(results["train_samples_per_s"], 1),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--symbols", default="10,50", help="comma-separated symbol counts, ascending")
    parser.add_argument("--bars", type=int, default=43_800, help="bars per symbol (43 800 = 5 years of 1h)")
    parser.add_argument(
        "--windows-per-symbol",
        type=int,
        default=600,
        help="newest windows trained per symbol (--max-windows)",
    )
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    for n in (int(v) for v in args.symbols.split(",")):
        print(json.dumps(run_one(n, args.bars, args.windows_per_symbol, extra)), flush=True)


if __name__ == "__main__":
    main()
