"""One-file checkpoints: round trips into both models, validation against the feature pipeline, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import convnext_fast
from convnext_fast import reference
from convnext_fast.errors import UserError
from convnext_fast.train.checkpoint import (
    FORMAT,
    VERSION,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    validate_meta,
)
from convnext_fast.train.inputs import FeatureSpec, LabelSpec
from convnext_fast.train.optim import build_ema, build_optimizer

SHAPE = {"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1)}


def meta_for(spec: FeatureSpec, rng) -> dict:
    return {
        "feature_spec": spec.to_dict(),
        "label_spec": LabelSpec(horizon=int(rng.integers(1, 20))).to_dict(),
        "normalisation": {
            "mean": rng.normal(size=spec.n_channels).tolist(),
            "std": rng.uniform(0.5, 2, spec.n_channels).tolist(),
        },
        "metrics": {"val_loss": float(rng.uniform()), "undefined": float("nan")},
    }


def trained_model(spec: FeatureSpec, task="classification"):
    model = reference.ConvNeXt1d(in_chans=spec.n_channels, task=task, num_outputs=2, **SHAPE)
    with torch.no_grad():  # move layer scale away from 1e-6 so the blocks matter in the comparison
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _write_unchecked(path, model, meta: dict) -> None:
    """A checkpoint file with ``meta`` as is, bypassing save_checkpoint's checks (as a foreign writer)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": FORMAT, "version": VERSION, "meta": json.dumps(meta)})


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_checkpoint_loads_into_reference_and_fused_models(tmp_path, rng, task):
    spec = FeatureSpec()
    model = trained_model(spec, task).eval()
    meta = meta_for(spec, rng)
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    x = torch.randn(3, spec.n_channels, 64)
    expected = model(x)
    for fused, cls in ((False, reference.ConvNeXt1d), (True, convnext_fast.ConvNeXt1d)):
        loaded, got_meta = load_checkpoint(path, fused=fused, feature_spec=spec)
        assert type(loaded) is cls and not loaded.training
        torch.testing.assert_close(loaded(x), expected, rtol=1e-4, atol=1e-5)
        assert got_meta.model == model.config and got_meta.task == task
        assert got_meta.label_spec == meta["label_spec"]
        assert got_meta.normalisation.mean == tuple(meta["normalisation"]["mean"])
        assert got_meta.metrics["val_loss"] == meta["metrics"]["val_loss"]
        assert got_meta.metrics["undefined"] is None  # NaN is stored as JSON null


def test_checkpoint_file_is_plain_safetensors_with_json_metadata(tmp_path, rng):
    spec = FeatureSpec()
    path = save_checkpoint(tmp_path / "m.safetensors", trained_model(spec), meta_for(spec, rng))
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        keys = list(f.keys())
    assert header["format"] == "convnext_fast.checkpoint"
    assert json.loads(header["meta"])["feature_spec"] == spec.to_dict()
    assert all(k.startswith("model.") for k in keys)
    assert not list(tmp_path.glob("*.tmp")), "the atomic write must not leave its temporary file"


def test_loading_fails_clearly_on_a_mismatched_pipeline(tmp_path, rng):
    spec = FeatureSpec()
    meta = meta_for(spec, rng)
    path = save_checkpoint(tmp_path / "m.safetensors", trained_model(spec), meta)
    other = FeatureSpec(rsi_period=spec.rsi_period + int(rng.integers(1, 5)))
    with pytest.raises(UserError, match=r"feature spec differs .*rsi_period"):
        load_checkpoint(path, feature_spec=other)
    load_checkpoint(path, feature_spec=FeatureSpec.from_dict(spec.to_dict()))  # an equal spec passes
    # in_chans that disagree with the feature spec's channel count
    bad = reference.ConvNeXt1d(in_chans=spec.n_channels + 1, **SHAPE)
    bad_meta = {
        **meta,
        "normalisation": {"mean": [0.0] * (spec.n_channels + 1), "std": [1.0] * (spec.n_channels + 1)},
    }
    with pytest.raises(UserError, match="channels"):  # refused when written ...
        save_checkpoint(tmp_path / "bad.safetensors", bad, bad_meta)
    _write_unchecked(tmp_path / "bad.safetensors", bad, {**bad_meta, "model": bad.config})
    with pytest.raises(UserError, match="channels"):  # ... and when read (a file from elsewhere)
        load_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match="normalisation"):
        validate_meta(
            {**meta, "model": {"in_chans": spec.n_channels}, "normalisation": {"mean": [0.0], "std": [1.0]}}
        )
    with pytest.raises(UserError, match="label spec"):
        validate_meta({**meta, "model": {"in_chans": spec.n_channels}, "label_spec": {"kind": "lunar"}})
    with pytest.raises(UserError, match="metadata lacks"):
        validate_meta({"model": {}})


def test_loading_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng().bytes(256))
    with pytest.raises(UserError, match="not a safetensors file"):
        load_checkpoint(junk)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "something"})
    with pytest.raises(UserError, match="not a convnext_fast checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_use_ema_loads_the_averaged_weights(tmp_path, rng):
    spec = FeatureSpec()
    model = trained_model(spec)
    ema = build_ema(model, 0.9)
    ema.update_parameters(model)
    with torch.no_grad():
        model.head.fc.weight.add_(1.0)
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta_for(spec, rng), ema=ema)
    live, _ = load_checkpoint(path, fused=False)
    averaged, _ = load_checkpoint(path, fused=False, use_ema=True)
    torch.testing.assert_close(live.head.fc.weight, model.head.fc.weight)
    torch.testing.assert_close(averaged.head.fc.weight, ema.module.head.fc.weight)
    plain = save_checkpoint(tmp_path / "plain.safetensors", model, meta_for(spec, rng))
    with pytest.raises(UserError, match="no EMA"):
        load_checkpoint(plain, use_ema=True)


def _steps(model, opt, ema, batches):
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update_parameters(model)


def test_resume_continues_exactly_where_training_stopped(tmp_path, rng):
    spec = FeatureSpec()
    batches = [(torch.randn(8, spec.n_channels, 64), torch.randint(0, 3, (8,))) for _ in range(4)]

    def fresh():
        torch.manual_seed(7)
        model = reference.ConvNeXt1d(in_chans=spec.n_channels, drop_path_rate=0.0, **SHAPE)
        opt = build_optimizer(model, 1e-3, 0.05)
        return model, opt, build_ema(model, 0.9)

    model_a, opt_a, ema_a = fresh()
    _steps(model_a, opt_a, ema_a, batches)

    model_b, opt_b, ema_b = fresh()
    _steps(model_b, opt_b, ema_b, batches[:2])
    state = {"epoch": 2, "step": 2, "best_val": 0.5}
    path = save_checkpoint(
        tmp_path / "last.safetensors",
        model_b,
        meta_for(spec, rng),
        ema=ema_b,
        optimizer=opt_b,
        training_state=state,
    )
    model_c, opt_c, ema_c = fresh()
    _, got_state = restore_training_state(path, model_c, ema=ema_c, optimizer=opt_c)
    assert got_state == state
    _steps(model_c, opt_c, ema_c, batches[2:])
    for (name, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values(), strict=True):
        torch.testing.assert_close(c, a, rtol=0, atol=0, msg=name)
    for a, c in zip(ema_a.module.parameters(), ema_c.module.parameters(), strict=True):
        torch.testing.assert_close(c, a, rtol=0, atol=0)
