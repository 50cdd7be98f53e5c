"""The performance model (scripts/gpu_perf_model.py): docs/gpu_performance.md is what the script renders,
the op's fused-MLP rule agrees with the model's verdict, and the model reproduces the review's numbers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

pytest.importorskip("triton")
import gpu_perf_model as model  # noqa: E402

from convnext_fast.ops.bottleneck.triton_kernels import use_fused_mlp  # noqa: E402


def test_docs_are_in_sync_with_the_script():
    doc = (ROOT / "docs" / "gpu_performance.md").read_text()
    assert doc == model.render() + "\n", "run: python scripts/gpu_perf_model.py --update-docs"


def test_default_run_prints_and_writes_no_tracked_file(tmp_path, capsys, monkeypatch):
    before = model.DOC.stat().st_mtime_ns
    assert model.main([]) == 0
    assert capsys.readouterr().out.startswith("# Fused Triton ops")
    assert model.DOC.stat().st_mtime_ns == before
    out = tmp_path / "perf.md"
    assert model.main(["--out", str(out)]) == 0
    assert out.read_text() == model.render() + "\n"


@pytest.mark.parametrize("c", range(16, 257, 16))
def test_fused_mlp_rule_matches_the_model(c):
    """The op picks the fused MLP exactly where the model predicts it beats two GEMMs (M powers of two,
    which include every B·T' of the modelled stages)."""
    for m in (1 << e for e in range(18)):
        seqs = model._bottleneck_sequences(m, c)
        fused_wins = model.seconds(seqs["fused-MLP fwd"]) < model.seconds(seqs["two-GEMM fwd"])
        assert use_fused_mlp(m, c, 2) == fused_wins, f"C={c} M={m}"


def test_fused_mlp_never_for_fp32_or_narrow_channels():
    assert not use_fused_mlp(64, 96, 4)
    # tl.dot needs every dimension ≥ 16: the padded width BLOCK_C = next power of two ≥ C decides
    assert not use_fused_mlp(64, 8, 2) and not use_fused_mlp(64, 3, 2)
    assert use_fused_mlp(64, 9, 2) and use_fused_mlp(64, 16, 2)


def test_model_reproduces_the_reviews_l2_figure():
    """base stage 2 at B=512 (C=256, M=16384, 32-row tiles): ~537 MB of weight re-reads, ~77 µs."""
    kernel = model.fused_mlp_kernel(16384, 256)
    assert kernel.wgmma is False
    assert kernel.l2 == pytest.approx(537e6, rel=0.01)
    assert kernel.l2 / model.L2_BYTES_PER_S == pytest.approx(77e-6, rel=0.01)
    assert not use_fused_mlp(16384, 256, 2)


def test_sequence_time_is_cpu_bound_for_short_kernels():
    tiny = [model.Kernel("k", 1e3, 1e3)] * 3
    assert model.seconds(tiny) == pytest.approx(3 * model.TRITON_LAUNCH_S)
    assert model.seconds(tiny, graph=True) == pytest.approx(
        3 * (model.GPU_TAIL_S + 1e3 / model.HBM_BYTES_PER_S)
    )
