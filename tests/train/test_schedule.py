"""LR schedule, AdamW parameter groups and the weight EMA."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from convnext_fast import reference
from convnext_fast.train.optim import build_ema, build_optimizer, no_decay_names, param_groups
from convnext_fast.train.schedule import warmup_cosine_lr, warmup_steps_for


def tiny_model(**kw):
    return reference.ConvNeXt1d(in_chans=5, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), **kw)


def test_warmup_is_linear_then_cosine_reaches_the_floor():
    total, warmup = random.randint(40, 200), random.randint(2, 20)
    base, floor = random.uniform(1e-4, 1e-2), random.uniform(0, 1e-5)
    lrs = [warmup_cosine_lr(s, total, warmup, base, floor) for s in range(total)]
    for s in range(warmup):
        assert lrs[s] == pytest.approx(base * (s + 1) / warmup)
    assert lrs[warmup - 1] == pytest.approx(base)
    decay = lrs[warmup:]
    assert all(a >= b for a, b in itertools.pairwise(decay)), "cosine phase must not increase"
    assert decay[0] == pytest.approx(base) and decay[-1] == pytest.approx(floor)
    # Half-way through the decay the cosine sits at the mean of its ends.
    mid = warmup + (total - warmup - 1) / 2
    if mid == int(mid):
        assert lrs[int(mid)] == pytest.approx((base + floor) / 2)


def test_no_warmup_starts_at_base_and_steps_past_the_end_are_clamped():
    base = random.uniform(1e-4, 1e-2)
    assert warmup_cosine_lr(0, 10, 0, base) == pytest.approx(base)
    assert warmup_cosine_lr(50, 10, 0, base) == pytest.approx(warmup_cosine_lr(9, 10, 0, base))


def test_warmup_is_capped_at_half_a_short_run():
    assert warmup_steps_for(5, epochs=100, steps_per_epoch=7) == 35
    assert warmup_steps_for(5, epochs=3, steps_per_epoch=10) == 15
    with pytest.raises(ValueError, match="warmup_epochs"):
        warmup_steps_for(-1, 3, 10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"total_steps": 0}, "total_steps"),
        ({"warmup_steps": 11}, "warmup_steps"),
        ({"base_lr": 0.0}, "base_lr"),
        ({"min_lr": 1.0}, "min_lr"),
    ],
)
def test_schedule_rejects_bad_arguments(kwargs, match):
    args = {"step": 0, "total_steps": 10, "warmup_steps": 2, "base_lr": 1e-3, "min_lr": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        warmup_cosine_lr(**args)


def test_weight_decay_spares_norms_biases_and_layer_scale():
    model = tiny_model()
    exempt = no_decay_names(model)
    for name, param in model.named_parameters():
        is_norm = ".norm." in name or name.startswith(("stem.1.", "head.norm.")) or ".downsample.0." in name
        expected = is_norm or name.endswith(".bias") or name.endswith("gamma")
        assert (name in exempt) == expected, name
        if expected:
            assert param.ndim == 1, f"{name} is exempt from decay but is a {param.ndim}-D weight"
    groups = param_groups(model, 0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]


def test_adamw_decays_weights_but_not_exempt_parameters():
    model = tiny_model()
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero gradients: any change is weight decay alone
    opt.step()
    exempt = no_decay_names(model)
    for name, param in model.named_parameters():
        if name in exempt:
            torch.testing.assert_close(param, before[name], rtol=0, atol=0)
        else:
            torch.testing.assert_close(param, before[name] * (1 - 1e-2 * 0.5))


def test_optimizer_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="lr"):
        build_optimizer(tiny_model(), lr=0, weight_decay=0.05)
    with pytest.raises(ValueError, match="weight_decay"):
        build_optimizer(tiny_model(), lr=1e-3, weight_decay=-1)
    with pytest.raises(ValueError, match="ema decay"):
        build_ema(tiny_model(), 1.0)


def test_ema_tracks_an_exponential_average_of_the_weights():
    model = tiny_model()
    decay = random.uniform(0.5, 0.95)
    ema = build_ema(model, decay)
    expected = {}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update_parameters(model)
        for n, p in model.named_parameters():
            # The first update starts the average at the current weights.
            expected[n] = (
                decay * expected[n] + (1 - decay) * p.detach() if n in expected else p.detach().clone()
            )
    for n, p in ema.module.named_parameters():
        torch.testing.assert_close(p, expected[n], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ema.module.head.fc.weight, model.head.fc.weight), (
        "EMA must lag the live weights"
    )
