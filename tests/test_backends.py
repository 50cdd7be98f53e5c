"""Backend reporting and forcing: a forced backend that cannot run raises instead of silently falling back."""

from __future__ import annotations

import pytest
import torch

import convnext_fast
from convnext_fast import ops
from convnext_fast.backends import resolve_backend, use_backend
from convnext_fast.ops.bottleneck.reference import bottleneck as bottleneck_ref


def test_backends_reports_every_backend():
    report = convnext_fast.backends()
    assert set(report) == {"cpu", "triton", "reference"}
    assert report["reference"] == "live"
    assert all(v == "live" or v.startswith("off: ") for v in report.values())


def test_cpu_backend_is_live_when_extension_loaded():
    if convnext_fast._ext._C is None:
        pytest.skip(f"_C not built: {convnext_fast._ext.LOAD_ERROR}")
    assert convnext_fast.backends()["cpu"] == "live"
    assert resolve_backend(torch.empty(1)) == "cpu"


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"), use_backend("cuda"):
        pass
    with pytest.raises(ValueError, match="backend must be one of"):
        convnext_fast.ConvNeXt1d(backend="gpu")


def test_forcing_triton_without_cuda_or_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with use_backend("triton"), pytest.raises(RuntimeError, match="forced but cannot run"):
        resolve_backend(torch.empty(1))


def test_use_backend_restores_previous_choice():
    with use_backend("reference"):
        assert resolve_backend(torch.empty(1)) == "reference"
        with use_backend("auto"):
            assert resolve_backend(torch.empty(1)) in {"cpu", "reference"}
        assert resolve_backend(torch.empty(1)) == "reference"


def test_reference_dispatch_matches_oracle():
    c = 12
    x, n = torch.randn(2, 9, c), torch.randn(2, 9, c)
    w1, b1, w2, b2 = torch.randn(4 * c, c), torch.randn(4 * c), torch.randn(c, 4 * c), torch.randn(c)
    gamma, scale = torch.randn(c), torch.tensor([0.0, 2.0])
    out = ops.bottleneck(x, n, w1, b1, w2, b2, gamma, scale, backend="reference")
    assert torch.equal(out, bottleneck_ref(x, n, w1, b1, w2, b2, gamma, scale))
    assert torch.equal(out[0], x[0]), "a dropped sample must pass its input through unchanged"


@pytest.mark.slow
def test_import_survives_a_missing_extension():
    """With _C unloadable, the package still imports, warns once, and runs the reference path."""
    import subprocess
    import sys

    code = (
        "import sys, warnings\n"
        "sys.modules['convnext_fast._C'] = None  # makes `from . import _C` raise ImportError\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import convnext_fast, torch\n"
        "    report = convnext_fast.backends()  # the extension loads on first use\n"
        "    report = convnext_fast.backends()  # and warns only once\n"
        "msgs = [str(w.message) for w in caught if 'convnext_fast._C could not be loaded' in str(w.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert report['cpu'].startswith('off: '), report\n"
        "m = convnext_fast.create('atto', in_chans=4).eval()\n"
        "print(tuple(m(torch.randn(1, 4, 64)).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 3)"
