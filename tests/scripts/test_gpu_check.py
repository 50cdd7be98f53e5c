"""scripts/gpu_check.sh (the one-shot device check) where there is no GPU: it must still parse, write its
one report saying what it skipped and why, and exit non-zero; the timing script refuses cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.child_env import child_env

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would run for real")
@pytest.mark.slow
def test_without_a_gpu_it_reports_what_it_skipped(tmp_path):
    report = tmp_path / "out" / "gpu_check.md"
    env = {**os.environ, "PYTHON": sys.executable, "TRITON_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run(
        ["bash", str(SCRIPT), str(report)], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    text = report.read_text()
    assert text.startswith("# GPU check")
    assert "Skipped:" in text and "no CUDA device" in text
    assert "No timing table" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_timing_script_refuses_without_cuda(tmp_path):
    env = child_env()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_bench_check.py"), "--out", str(tmp_path / "t.md")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "no CUDA device" in result.stderr
    assert not (tmp_path / "t.md").exists()
