"""The fused drop-in model against the reference: state_dict both ways, forward and every gradient in
fp32, the stem / downsample convs as linears (patchify), drop path under train(), B=1 and odd T, bf16 autocast, DataParallel, convert(), ONNX export and
torch.compile(fullgraph=True)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import convnext_fast
from convnext_fast import reference
from convnext_fast._ext import _C
from tests.helpers import TOLERANCE, assert_close

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")

# C not a multiple of 8 in every stage; depth ≥ 1 everywhere so each stage's blocks are exercised.
SMALL = {"dims": (20, 40, 100, 60), "depths": (1, 2, 1, 1)}


def randomize_(model: nn.Module) -> nn.Module:
    """Give every parameter O(1) random values (layer scale and biases too): with the default init
    (gamma = 1e-6, zero biases) the blocks would barely touch the output and an error could hide."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.5)
            elif p.ndim > 1:
                p.copy_(torch.randn_like(p) / (p[0].numel() ** 0.5))
            else:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    return model


def pair(**kw) -> tuple[reference.ConvNeXt1d, convnext_fast.ConvNeXt1d]:
    """A randomised reference model and its fused conversion, both in eval mode."""
    ref = randomize_(reference.ConvNeXt1d(in_chans=20, **{**SMALL, **kw})).eval()
    return ref, convnext_fast.convert(ref)


def test_state_dict_loads_strictly_both_ways():
    ref, _ = pair()
    fused = convnext_fast.ConvNeXt1d(in_chans=20, **SMALL)
    assert list(fused.state_dict()) == list(ref.state_dict())
    fused.load_state_dict(ref.state_dict(), strict=True)
    again = reference.ConvNeXt1d(in_chans=20, **SMALL)
    again.load_state_dict(fused.state_dict(), strict=True)
    for key, value in ref.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


@pytest.mark.parametrize(("batch", "t"), [(1, 64), (3, 75)], ids=["B1-T64", "B3-T75"])
def test_forward_and_every_gradient_match_reference(batch, t):
    ref, fused = pair(drop_path_rate=0.0)
    ref64 = reference.ConvNeXt1d(in_chans=20, **SMALL, drop_path_rate=0.0).double()
    ref64.load_state_dict(ref.state_dict())
    x = torch.randn(batch, 20, t)
    x64 = x.double().requires_grad_()
    x32 = x.clone().requires_grad_()
    out, out64 = fused(x32), ref64(x64)
    assert_close("logits", out64, out, TOLERANCE[torch.float32])
    grad = torch.randn(out.shape, dtype=torch.float64)
    out.backward(grad.float())
    out64.backward(grad)
    assert_close("grad x", x64.grad, x32.grad, TOLERANCE[torch.float32])
    for (name, p), p64 in zip(fused.named_parameters(), ref64.parameters(), strict=True):
        assert_close(f"grad {name}", p64.grad, p.grad, TOLERANCE[torch.float32])


@pytest.mark.parametrize(
    ("b", "t", "c", "c_out", "k"), [(1, 8, 13, 26, 2), (3, 36, 20, 40, 4), (2, 10, 100, 7, 2)]
)
def test_patchify_is_the_strided_conv_channels_last(b, t, c, c_out, k):
    from convnext_fast.model import patchify

    conv = nn.Conv1d(c, c_out, kernel_size=k, stride=k).double()
    h = torch.randn(b, t, c, dtype=torch.float64, requires_grad=True)
    got = patchify(h, conv)
    want = conv(h.transpose(1, 2)).transpose(1, 2)
    assert got.shape == (b, t // k, c_out) and got.is_contiguous()
    assert_close("patchify", want, got, 1e-12)
    g = torch.randn_like(want)
    grads = [torch.autograd.grad(out, (h, conv.weight, conv.bias), g) for out in (want, got)]
    for name, w, o in zip(("dh", "dweight", "dbias"), *grads, strict=True):
        assert_close(name, w, o, 1e-12)


def test_drop_path_in_training_draws_like_the_reference():
    ref, fused = pair(drop_path_rate=0.5)
    ref.train(), fused.train()
    x = torch.randn(6, 20, 64)
    torch.manual_seed(1234)
    expected = ref(x)
    torch.manual_seed(1234)
    got = fused(x)
    assert_close("train-mode logits", expected.double(), got, TOLERANCE[torch.float32])
    fused.eval()
    assert_close("eval has no drop path", ref.eval()(x).double(), fused(x), TOLERANCE[torch.float32])


def test_bf16_autocast_runs_within_bf16_tolerance():
    ref, fused = pair()
    x = torch.randn(2, 20, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(x)
    assert_close("autocast bf16", ref.double()(x.double()), out.float(), 5e-2)  # bf16 through ~10 layers


def test_data_parallel_to_and_inference_session():
    ref, fused = pair()
    fused = fused.to("cpu").to(torch.float32)
    x = torch.randn(2, 20, 96)
    expected = ref.double()(x.double())
    assert_close("DataParallel", expected, nn.DataParallel(fused)(x), TOLERANCE[torch.float32])
    session = fused.inference_session()
    assert_close("inference_session", expected, torch.from_numpy(session(x)), TOLERANCE[torch.float32])


def test_create_matches_reference_create_and_backend_reference_agrees():
    fused = convnext_fast.create("atto", backend="reference").eval()
    assert fused.config == reference.create("atto").config
    randomize_(fused)
    x = torch.randn(1, 20, 32)
    with convnext_fast.use_backend("cpu"):
        cpu_out = convnext_fast.convert(fused)(x)
    assert_close("reference backend vs cpu", fused(x).double(), cpu_out, TOLERANCE[torch.float32])


def test_bad_input_errors_name_the_argument():
    _, fused = pair()
    with pytest.raises(ValueError, match="at least 32"):
        fused(torch.randn(1, 20, 31))
    with pytest.raises(ValueError, match="in_chans=20"):
        fused(torch.randn(1, 19, 64))
    with pytest.raises(TypeError, match="floating-point"):
        fused(torch.zeros(1, 20, 64, dtype=torch.long))


def test_nan_input_propagates():
    _, fused = pair()
    x = torch.randn(2, 20, 64)
    x[1, 3, 40] = float("nan")
    out = fused(x)
    assert out[1].isnan().all() and out[0].isfinite().all()


# The legacy TorchScript exporter (fast, what the benchmarks use) warns about itself and about the
# reference's input checks being traced as constants; neither affects the exported graph checked here.
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_onnx_export_matches(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    ref, fused = pair()
    fused.eval()
    x = torch.randn(2, 20, 64)
    path = tmp_path / "fused.onnx"
    torch.onnx.export(fused, (x,), str(path), input_names=["x"], output_names=["logits"], dynamo=False)
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    assert_close(
        "onnx", ref.double()(x.double()), torch.from_numpy(np.asarray(got)), TOLERANCE[torch.float32]
    )


@pytest.mark.slow
def test_torch_compile_fullgraph_forward_and_backward():
    ref = randomize_(
        # One width for every stage: inductor compiles one kernel per distinct shape, so a cold compile
        # takes 26 s here against 41 s for widths 8/16/24/32 (the ops' own tests cover the other widths).
        reference.ConvNeXt1d(in_chans=20, dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), drop_path_rate=0.0)
    )
    fused = convnext_fast.convert(ref)
    compiled = torch.compile(fused, fullgraph=True)
    x = torch.randn(2, 20, 64)
    out = compiled(x)
    assert_close("compiled", copy.deepcopy(ref).double()(x.double()), out, TOLERANCE[torch.float32])
    out.sum().backward()
    ref.zero_grad()
    ref(x).sum().backward()
    for (name, p), p_ref in zip(fused.named_parameters(), ref.parameters(), strict=True):
        assert_close(f"compiled grad {name}", p_ref.grad, p.grad, 1e-4)
