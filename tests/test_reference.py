"""The oracle itself is checked: shapes, parameter counts from the architecture, T handling, drop path,
gradients, bad inputs, and a float64 numpy re-implementation written independently of the model code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import erf

from convnext_fast import reference
from convnext_fast.variants import VARIANTS
from tests.helpers import relative_error


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter O(1) random values: with gamma=1e-6 and zero biases a block is almost the
    identity and a wrong branch would hide below any tolerance."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or ".norm" in name or name.startswith("stem.1"):
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
            else:
                p.copy_(torch.randn_like(p) * 0.2)
    return model


# ---- an independent float64 numpy ConvNeXt-1D (channels-first, written from the architecture) ----------
def np_layernorm_channels(x, w, b, eps=1e-6):  # x [B, C, T]
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[None, :, None] + b[None, :, None]


def np_conv1d(x, w, b, stride=1, padding=0, groups=1):  # x [B, Cin, T], w [Cout, Cin/groups, K]
    bsz, _, t = x.shape
    cout, cin_g, k = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    t_out = (t + 2 * padding - k) // stride + 1
    out = np.zeros((bsz, cout, t_out))
    cout_g = cout // groups
    for o in range(cout):
        g = o // cout_g
        for i in range(cin_g):
            for j in range(k):
                out[:, o, :] += w[o, i, j] * xp[:, g * cin_g + i, j : j + stride * t_out : stride]
    return out + b[None, :, None]


def np_block(x, p, prefix):
    c = x.shape[1]
    h = np_conv1d(x, p[prefix + "conv_dw.weight"], p[prefix + "conv_dw.bias"], padding=3, groups=c)
    h = np_layernorm_channels(h, p[prefix + "norm.weight"], p[prefix + "norm.bias"])
    h = h.transpose(0, 2, 1)  # [B, T, C]
    h = h @ p[prefix + "mlp.fc1.weight"].T + p[prefix + "mlp.fc1.bias"]
    h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    h = h @ p[prefix + "mlp.fc2.weight"].T + p[prefix + "mlp.fc2.bias"]
    h = h * p[prefix + "gamma"]
    return x + h.transpose(0, 2, 1)


def np_forward(x, p, depths):
    t = x.shape[-1]
    x = x[..., t % 32 :]
    h = np_conv1d(x, p["stem.0.weight"], p["stem.0.bias"], stride=4)
    h = np_layernorm_channels(h, p["stem.1.weight"], p["stem.1.bias"])
    for s, depth in enumerate(depths):
        if s > 0:
            h = np_layernorm_channels(
                h, p[f"stages.{s}.downsample.0.weight"], p[f"stages.{s}.downsample.0.bias"]
            )
            h = np_conv1d(
                h, p[f"stages.{s}.downsample.1.weight"], p[f"stages.{s}.downsample.1.bias"], stride=2
            )
        for j in range(depth):
            h = np_block(h, p, f"stages.{s}.blocks.{j}.")
    pooled = h.mean(axis=2)
    mu, var = pooled.mean(axis=1, keepdims=True), pooled.var(axis=1, keepdims=True)
    pooled = (pooled - mu) / np.sqrt(var + 1e-6) * p["head.norm.weight"] + p["head.norm.bias"]
    return pooled @ p["head.fc.weight"].T + p["head.fc.bias"]


def np_params(model):
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("c,t", [(40, 16), (20, 9), (7, 1)], ids=lambda v: str(v))
def test_block_matches_float64_numpy(c, t):
    block = _randomise(reference.Block(c)).double().eval()
    x = torch.randn(2, c, t, dtype=torch.float64)
    p = {"blk." + k: v for k, v in np_params(block).items()}
    expected = np_block(x.numpy(), p, "blk.")
    err = relative_error(torch.from_numpy(expected), block(x))
    assert err <= 1e-6, err


@pytest.mark.parametrize("t", [64, 97])
def test_atto_forward_matches_float64_numpy(t):
    model = _randomise(reference.create("atto", in_chans=5)).double().eval()
    x = torch.randn(2, 5, t, dtype=torch.float64)
    expected = np_forward(x.numpy(), np_params(model), model.depths)
    err = relative_error(torch.from_numpy(expected), model(x))
    assert err <= 1e-6, err


def test_float64_oracle_detects_a_wrong_block():
    """The numpy check must be able to fail: a block with tanh-GELU instead of exact GELU is caught."""
    block = _randomise(reference.Block(16)).double().eval()
    block.mlp.act = torch.nn.GELU(approximate="tanh")
    x = torch.randn(2, 16, 12, dtype=torch.float64) * 3
    p = {"blk." + k: v for k, v in np_params(block).items()}
    assert relative_error(torch.from_numpy(np_block(x.numpy(), p, "blk.")), block(x)) > 1e-6


def expected_param_count(in_chans, dims, depths, outputs):
    """Counted from the architecture, not from the code under test."""
    n = in_chans * dims[0] * 4 + dims[0] + 2 * dims[0]  # stem conv + LayerNorm
    for s, (c, depth) in enumerate(zip(dims, depths, strict=True)):
        if s > 0:
            prev = dims[s - 1]
            n += 2 * prev + prev * c * 2 + c  # downsample LayerNorm + conv k=2
        n += depth * (8 * c * c + 16 * c)  # dw 7C+C, LN 2C, fc1 4C²+4C, fc2 4C²+C, gamma C
    return n + 2 * dims[-1] + dims[-1] * outputs + outputs  # head LayerNorm + Linear


@pytest.mark.parametrize(
    "variant", [pytest.param(v, marks=pytest.mark.slow) if v == "base" else v for v in VARIANTS]
)
def test_param_count_and_output_shape(variant):
    model = reference.create(variant, in_chans=20).eval()
    dims, depths = VARIANTS[variant]
    assert sum(p.numel() for p in model.parameters()) == expected_param_count(20, dims, depths, 3)
    with torch.no_grad():
        out = model(torch.randn(1, 20, 32))
        feats = model(torch.randn(3, 20, 64), return_features=True)
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    assert feats.shape == (3, dims[-1])


def test_tiny_has_about_26_8m_parameters():
    n = sum(p.numel() for p in reference.create("tiny", in_chans=20).parameters())
    assert n == expected_param_count(20, *VARIANTS["tiny"], 3)
    assert 26.7e6 < n < 26.9e6


def test_regression_head_and_explicit_dims():
    model = reference.ConvNeXt1d(
        in_chans=7, dims=(8, 16, 24, 32), depths=(1, 0, 2, 1), task="regression", num_outputs=4
    )
    assert model(torch.randn(2, 7, 96)).shape == (2, 4)
    assert model.forward_features(torch.randn(2, 7, 96)).shape == (2, 32, 3)
    rebuilt = reference.ConvNeXt1d(**model.config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def small_model(**kw):
    return _randomise(reference.ConvNeXt1d(in_chans=6, dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), **kw))


@pytest.mark.parametrize("t", [33, 95, 257, 100])
def test_t_not_multiple_of_32_crops_oldest_bars(t):
    model = small_model().eval()
    x = torch.randn(2, 6, t)
    keep = t - t % 32
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out, model(x[..., -keep:]))
        changed_old = x.clone()
        changed_old[..., : t % 32] += 100.0  # bars that are cropped away
        assert torch.equal(out, model(changed_old))
        changed_new = x.clone()
        changed_new[..., -1] += 1.0  # the newest bar must reach the output
        assert not torch.allclose(out, model(changed_new))


def test_too_short_t_raises():
    with pytest.raises(ValueError, match="at least 32"):
        small_model()(torch.randn(1, 6, 31))


def test_eval_is_deterministic_and_train_applies_drop_path():
    model = small_model(drop_path_rate=0.5)
    x = torch.randn(8, 6, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        a, b = model(x), model(x)
    assert not torch.allclose(a, b), "drop path had no effect in train mode"
    no_dp = small_model(drop_path_rate=0.0)
    with torch.no_grad():
        assert torch.equal(no_dp.train()(x), no_dp.eval()(x))


def test_drop_path_rates_rise_linearly():
    model = reference.ConvNeXt1d(in_chans=3, dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), drop_path_rate=0.3)
    rates = [blk.drop_path_rate for st in model.stages for blk in st.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_init_follows_convnext():
    model = reference.create("atto", in_chans=20)
    fc1 = model.stages[2].blocks[0].mlp.fc1
    assert fc1.bias.abs().max() == 0
    # timm's trunc_normal_(std=.02) truncates at ±2 (absolute), i.e. effectively a plain normal
    assert 0.019 < fc1.weight.std().item() < 0.021 and abs(fc1.weight.mean().item()) < 1e-3
    assert torch.all(model.stages[0].blocks[0].gamma == 1e-6)


def test_gradients_reach_every_parameter():
    model = small_model(drop_path_rate=0.0).train()
    loss = model(torch.randn(3, 6, 64)).logsumexp(dim=1).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize(
    "x,exc,match",
    [
        (torch.randn(6, 64), ValueError, "rank 2"),
        (torch.randn(2, 5, 64), ValueError, "5 channels"),
        (torch.randint(0, 5, (2, 6, 64)), TypeError, "floating-point"),
        (np.zeros((2, 6, 64), dtype=np.float32), TypeError, "torch.Tensor"),
        (torch.randn(0, 6, 64), ValueError, "batch size 0"),
    ],
    ids=["rank", "channels", "dtype", "numpy", "empty"],
)
def test_bad_inputs_raise_clear_errors(x, exc, match):
    with pytest.raises(exc, match=match):
        small_model()(x)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dims": (8, 16, 32)}, "4 entries"),
        ({"task": "ranking"}, "task must be"),
        ({"drop_path_rate": 1.0}, "drop_path_rate"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": 0}, "at least one output"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        reference.ConvNeXt1d(**kwargs)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        reference.create("huge")
