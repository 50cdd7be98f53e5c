"""Backend reporting and forcing: a forced backend that cannot run raises instead of silently falling back."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

import convnext_fast
from convnext_fast import ops
from convnext_fast.backends import resolve_backend, use_backend
from convnext_fast.ops.bottleneck.reference import bottleneck as bottleneck_ref

# the module (``convnext_fast.backends`` the attribute is the report function of the same name)
policy = importlib.import_module("convnext_fast.backends")


def _python(code: str) -> str:
    """stdout of ``code`` run in a fresh interpreter (fails the test on a non-zero exit)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


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
    assert _python(code) == "(1, 3)"


def test_auto_means_the_same_for_the_fused_model_and_the_live_predictor(monkeypatch):
    """One policy: for the same device, the fused model's "auto" and the live predictor's pick the same
    backend, with the extension loaded and without it."""
    from convnext_fast import _ext, reference
    from convnext_fast.live.predictor import make_predictor
    from convnext_fast.model import backend_for

    model = reference.ConvNeXt1d(in_chans=4, dims=(8, 8, 8, 8), depths=(1, 1, 1, 1)).eval()
    expected = {True: "cpu" if _ext._C is not None else "reference", False: "reference"}
    for loaded in (True, False):
        if not loaded:
            monkeypatch.setattr(_ext, "_C", None)
            monkeypatch.setattr(policy, "_warned_missing_extension", True)  # warned in its own test
        chosen = policy.choose_backend("cpu")
        assert chosen == expected[loaded]
        assert backend_for("cpu", None) == chosen
        assert make_predictor(model, "auto")[1] == chosen


def test_forced_cpu_without_the_extension_fails_with_the_one_message(monkeypatch):
    from convnext_fast import _ext
    from convnext_fast.errors import UserError
    from convnext_fast.live.predictor import make_predictor
    from convnext_fast.ops.dwconv_layernorm import cpu as dwconv_cpu

    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "LOAD_ERROR", "ImportError: gone")
    monkeypatch.setattr(policy, "_warned_missing_extension", True)
    with pytest.raises(
        policy.BackendUnavailable, match=r"forced but cannot run: convnext_fast._C not loaded"
    ):
        policy.choose_backend("cpu", "cpu")
    model = convnext_fast.reference.ConvNeXt1d(in_chans=4, dims=(8, 8, 8, 8), depths=(1, 1, 1, 1))
    with pytest.raises(UserError, match=r"--backend cpu cannot run here: .*ImportError: gone"):
        make_predictor(model, "cpu")
    # a direct call of a cpu op (the policy bypassed) says the same, instead of quietly running the reference
    x = torch.randn(1, 8, 4)
    w, b = torch.randn(4, 1, 7), torch.randn(4)
    with pytest.raises(policy.BackendUnavailable, match=r"could not be loaded \(ImportError: gone\)"):
        dwconv_cpu.dwconv_layernorm(x, w, b, torch.ones(4), torch.zeros(4))


def test_backend_names_import_without_torch():
    """The command line builds its --backend choices from this module before torch may load."""
    code = (
        "import sys\n"
        "from convnext_fast.backends import BACKENDS\n"
        "assert 'torch' not in sys.modules, 'convnext_fast.backends imported torch'\n"
        "print(','.join(BACKENDS))\n"
    )
    assert _python(code) == "auto,cpu,triton,reference"
