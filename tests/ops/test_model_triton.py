"""The whole fused model on its Triton path (interpreted on CPU when there is no GPU) against the float64
reference model: logits and every parameter gradient."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import convnext_fast
from convnext_fast import reference
from tests.helpers import TOLERANCE, assert_close
from tests.ops.conftest import triton_interpreter_usable

ROOT = Path(__file__).resolve().parents[2]
TRITON_TEST_FILES = [
    "test_dwconv_layernorm_triton.py",
    "test_bottleneck_triton.py",
    "test_triton_dispatch.py",
    "test_model_triton.py",
]

TINY = {"in_chans": 20, "dims": (8, 16, 24, 40), "depths": (1, 1, 1, 1)}


def test_fused_model_runs_triton_end_to_end(triton_device, monkeypatch):
    from convnext_fast.ops.bottleneck import triton as bottleneck_module
    from convnext_fast.ops.dwconv_layernorm import triton as dwconv_module

    calls = {"dwconv_layernorm": 0, "bottleneck": 0}
    for name, module in (("dwconv_layernorm", dwconv_module), ("bottleneck", bottleneck_module)):
        real = getattr(module, f"{name}_fwd")
        monkeypatch.setattr(
            module,
            f"{name}_fwd",
            lambda *a, real=real, name=name: calls.update({name: calls[name] + 1}) or real(*a),
        )

    # layer_scale_init 0.5 (not 1e-6) so the blocks' branches shape the logits and their gradients.
    ref = reference.ConvNeXt1d(**TINY, drop_path_rate=0.0, layer_scale_init=0.5)
    fused = convnext_fast.convert(ref, backend="triton").to(triton_device)
    x = torch.randn(2, 20, 64)
    out = fused(x.to(triton_device))
    assert calls == {"dwconv_layernorm": 4, "bottleneck": 4}

    exact = copy.deepcopy(ref).double()
    expected = exact(x.double())
    assert_close("logits", expected, out, TOLERANCE[torch.float32])
    grad = torch.randn_like(expected)
    expected.backward(grad)
    out.backward(grad.float().to(triton_device))
    fused_params = dict(fused.named_parameters())
    for name, p in exact.named_parameters():
        assert_close(f"grad {name}", p.grad, fused_params[name].grad, 2 * TOLERANCE[torch.float32])


def test_forcing_triton_without_a_way_to_run_it_raises(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device can run the Triton backend")
    fused = convnext_fast.ConvNeXt1d(**TINY, backend="triton")
    with pytest.raises(RuntimeError, match="triton"):
        fused(torch.randn(1, 20, 32))


@pytest.mark.timeout(480)
def test_triton_tests_in_a_fresh_process():
    """When this process cannot interpret Triton (triton was imported before TRITON_INTERPRET was set),
    the Triton tests here skip; run them in a fresh process with the variable set from the start."""
    pytest.importorskip("triton")
    if torch.cuda.is_available() or triton_interpreter_usable():
        pytest.skip("the Triton tests run in this process")
    files = [str(Path(__file__).parent / name) for name in TRITON_TEST_FILES]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not fresh_process", *files],
        env={**os.environ, "TRITON_INTERPRET": "1"},
        capture_output=True,
        text=True,
        cwd=ROOT,
        # generous: CI shares 2 cores, and the interpreter is CPU-bound
        timeout=450,
        check=False,
    )
    assert result.returncode == 0, (
        f"Triton interpreter tests failed:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    )
    assert " passed" in result.stdout and "skipped" not in result.stdout.splitlines()[-1]
