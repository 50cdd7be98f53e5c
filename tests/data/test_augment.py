"""Augmentations: each transform does what it says, shape-preserving and seeded, and none ever reaches
validation/test batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convnext_fast.data.augment import Augment
from convnext_fast.data.dataset import WindowDataset, make_loader

OFF = {"p_slice": 0.0, "p_warp": 0.0, "p_scale": 0.0, "p_jitter": 0.0}


@pytest.fixture
def batch(rng) -> torch.Tensor:
    shape = (int(rng.integers(64, 128)), int(rng.integers(2, 12)), int(rng.integers(32, 128)))
    # Positive, trending channels so scaling/warping are visible and a cut history is easy to recognise.
    return torch.from_numpy(rng.normal(1.0, 0.3, shape).cumsum(axis=2).astype(np.float32))


def only(name: str, **strengths) -> dict:
    return {**OFF, f"p_{name}": 1.0, **strengths}


def test_seeded_shape_preserving_and_input_untouched(batch, rng):
    seed = int(rng.integers(2**31))
    original = batch.clone()
    first, again = Augment(seed=seed)(batch), Augment(seed=seed)(batch)
    assert first.shape == batch.shape and first.dtype == batch.dtype
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, Augment(seed=seed + 1)(batch)), "another seed, other augmentations"
    assert torch.equal(batch, original), "the input batch is never modified"
    assert torch.isfinite(first).all()
    assert Augment(**OFF, seed=seed)(batch.double()).dtype == torch.float64
    assert torch.equal(Augment(**OFF, seed=seed)(batch), batch), "all probabilities 0 is the identity"


def test_window_slicing_keeps_newest_bars_and_pads_with_the_oldest_kept(batch, rng):
    strength = float(rng.uniform(0.2, 0.9))
    out = Augment(**only("slice", slice_strength=strength), seed=int(rng.integers(2**31)))(batch)
    length = batch.shape[2]
    cuts = []
    for row_in, row_out in zip(batch, out, strict=True):
        # The first bar that equals the input at the same time is where the kept history starts.
        cut = int(np.argmax((row_out == row_in).all(dim=0).numpy()))
        cuts.append(cut)
        assert torch.equal(row_out[:, cut:], row_in[:, cut:])
        assert torch.equal(row_out[:, :cut], row_in[:, cut : cut + 1].expand(-1, cut))
    assert max(cuts) <= strength * length and max(cuts) > 0


def test_time_warping_keeps_endpoints_and_interpolates(batch, rng):
    out = Augment(**only("warp", warp_strength=0.5), seed=int(rng.integers(2**31)))(batch)
    torch.testing.assert_close(out[:, :, [0, -1]], batch[:, :, [0, -1]], rtol=1e-6, atol=1e-5)
    assert (out - batch).abs().amax(dim=(1, 2)).min() > 0, "every chosen row is warped"
    low, high = batch.amin(dim=2, keepdim=True), batch.amax(dim=2, keepdim=True)
    assert ((out >= low - 1e-4) & (out <= high + 1e-4)).all(), "linear interpolation stays within the row"
    # The warped series is still monotone where the input is (a time map, not a shuffle).
    monotone = torch.cummax(batch, dim=2).values
    warped_monotone = Augment(**only("warp", warp_strength=0.5), seed=1)(monotone)
    assert (warped_monotone.diff(dim=2) >= -1e-4).all()


def test_magnitude_scaling_is_one_positive_factor_per_channel(batch, rng):
    out = Augment(**only("scale", scale_strength=0.2), seed=int(rng.integers(2**31)))(batch)
    ratio = out / batch
    torch.testing.assert_close(ratio, ratio[:, :, :1].expand_as(ratio), rtol=1e-5, atol=1e-5)
    factors = ratio[:, :, 0]
    assert (factors > 0).all() and factors.std() > 0.1


def test_jitter_noise_scales_with_each_channel(batch, rng):
    strength = float(rng.uniform(0.02, 0.2))
    scaled = batch * torch.logspace(-2, 2, batch.shape[1])[None, :, None]
    out = Augment(**only("jitter", jitter_strength=strength), seed=int(rng.integers(2**31)))(scaled)
    # Per row and channel the noise std is strength × that row's std; averaged over rows it is ≈ 1.
    relative = (out - scaled).std(dim=2) / (strength * scaled.std(dim=2, unbiased=False))
    torch.testing.assert_close(relative.mean(dim=0), torch.ones(batch.shape[1]), rtol=0.1, atol=0)


def test_each_probability_picks_about_that_share_of_rows(rng):
    p = float(rng.uniform(0.2, 0.8))
    batch = torch.from_numpy(rng.normal(size=(4_000, 2, 32)).astype(np.float32))
    out = Augment(**{**OFF, "p_scale": p}, seed=int(rng.integers(2**31)))(batch)
    changed = (out != batch).any(dim=2).any(dim=1).double().mean().item()
    assert abs(changed - p) < 5 * np.sqrt(p * (1 - p) / 4_000)


def test_config_round_trip_and_errors(rng):
    augment = Augment(p_warp=float(rng.uniform()), warp_knots=int(rng.integers(1, 9)), seed=3)
    assert Augment.from_dict(augment.to_dict()).to_dict() == augment.to_dict()
    with pytest.raises(ValueError, match="unknown keys"):
        Augment.from_dict({"p_wrap": 0.1})
    for bad, name in [({"p_jitter": 1.5}, "p_jitter"), ({"slice_strength": 1.0}, "slice_strength")]:
        with pytest.raises(ValueError, match=name):
            Augment(**bad)
    with pytest.raises(ValueError, match=r"\[B, C, T\]"):
        Augment()(torch.zeros(3, 4))


def test_augmentation_never_reaches_validation_or_test(rng):
    """Only a train loader takes an Augment; val/test batches are byte-identical to the stored windows."""
    features = rng.normal(size=(5, 600)).astype(np.float32)
    labels = rng.integers(0, 3, 600)
    calls = []

    def spy(x):
        calls.append(x.shape)
        return Augment(seed=0)(x)

    train = WindowDataset(features, labels, np.arange(0, 300), window=32)
    evaluation = WindowDataset(features, labels, np.arange(400, 600), window=32)
    with pytest.raises(ValueError, match="augment is for training only"):
        make_loader(evaluation, 16, train=False, augment=spy)
    seen = torch.cat([x for x, _ in make_loader(evaluation, 16, train=False)])
    stored = np.stack([features[:, e - 31 : e + 1] for e in evaluation.end_idx])
    assert seen.numpy().tobytes() == stored.tobytes()
    assert not calls
    augmented = [x for x, _ in make_loader(train, 16, train=True, augment=spy, shuffle=False)]
    assert len(calls) == len(augmented) and sum(shape[0] for shape in calls) == len(train)
    plain = torch.cat([x for x, _ in make_loader(train, 16, train=True, shuffle=False)])
    assert not torch.equal(torch.cat(augmented), plain), "the training loader does augment"
