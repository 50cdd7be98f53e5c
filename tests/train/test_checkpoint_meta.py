"""CheckpointMeta, the one reader and writer of checkpoint metadata: round trips (hypothesis), a clear
error naming the key for every bad value, compatibility with what the trainer wrote before it existed, and
the one normaliser the trainer and the live loop share."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from convnext_fast import reference
from convnext_fast.data.dataset import DEFAULT_WINDOW
from convnext_fast.errors import UserError
from convnext_fast.features.pipeline import FeatureSpec
from convnext_fast.train.checkpoint import FORMAT, VERSION, CheckpointMeta, load_checkpoint, save_checkpoint
from convnext_fast.train.normalisation import Normalisation
from convnext_fast.train.records import dumps

SPEC = FeatureSpec()
C = SPEC.n_channels
SHAPE = {"dims": [8, 8, 8, 8], "depths": [1, 1, 1, 1]}


def model_config(task="classification", outputs=2) -> dict:
    extra = {"task": task, "num_outputs": outputs} if task == "regression" else {}
    return reference.ConvNeXt1d(in_chans=C, **SHAPE, **extra).config


def stored(**overrides) -> dict:
    """Metadata as the trainer writes it (a classification fold)."""
    meta = {
        "variant": None,
        "model": model_config(),
        "task": "classification",
        "window": 64,
        "feature_spec": SPEC.to_dict(),
        "label_spec": {
            "kind": "fixed",
            "horizon": 6,
            "threshold": 0.004,
            "k": 1.0,
            "vol": "atr",
            "vol_window": 14,
        },
        "normalisation": {"mean": [0.1] * C, "std": [2.0] * C, "clip": 10.0},
        "fold": 0,
        "ranges": {
            "train": ["2024-01-01 00:00", "2024-02-01 00:00"],
            "val": ["2024-02-03 00:00", "2024-02-10 00:00"],
            "test": ["2024-02-12 00:00", "2024-03-01 00:00"],
        },
        "train_config": {"interval": "60", "window": 64, "horizons": [1]},
        "metrics": {"val_loss": 1.05, "epoch": 3},
    }
    return {**meta, **overrides}


times = st.datetimes().map(lambda t: t.strftime("%Y-%m-%d %H:%M"))
finite = st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def metas(draw) -> CheckpointMeta:
    task = draw(st.sampled_from(["classification", "regression"]))
    outputs = draw(st.integers(1, 4))
    ranges = draw(st.dictionaries(st.sampled_from(["train", "val", "test"]), st.tuples(times, times)))
    scale = draw(st.lists(st.floats(1e-6, 10.0), min_size=outputs, max_size=outputs))
    return CheckpointMeta.from_dict(
        stored(
            model=model_config(task, outputs),
            task=task,
            window=draw(st.none() | st.integers(32, 4096)),
            label_spec=None if task == "regression" else stored()["label_spec"],
            normalisation={
                "mean": draw(st.lists(finite, min_size=C, max_size=C)),
                "std": draw(st.lists(st.floats(1e-6, 1e6), min_size=C, max_size=C)),
                "clip": draw(st.floats(0.5, 100.0)),
            },
            target_scale=scale if task == "regression" else None,
            fold=draw(st.none() | st.integers(0, 50)),
            ranges={k: list(v) for k, v in ranges.items()},
            threshold=draw(st.none() | st.floats(0.0, 1.0)),
        )
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(metas())
def test_round_trip_through_the_stored_form(meta):
    text = dumps(meta.to_dict())  # exactly what the checkpoint header holds
    again = CheckpointMeta.from_dict(json.loads(text))
    assert again == meta
    assert again.to_dict() == meta.to_dict()


def test_threshold_and_every_field_survive_a_checkpoint_file(tmp_path, rng):
    model = reference.ConvNeXt1d(in_chans=C, **SHAPE).eval()
    tau = float(rng.uniform(0.3, 0.7))
    meta = CheckpointMeta.from_dict(stored()).replace(threshold=tau)
    path = save_checkpoint(tmp_path / "m.safetensors", model, meta)
    _, loaded = load_checkpoint(path, fused=False)
    assert loaded == meta and loaded.threshold == tau
    assert loaded.out_of_sample_start == "2024-02-12 00:00"
    assert loaded.fitted_range_ends == {"train": "2024-02-01 00:00", "val": "2024-02-10 00:00"}
    assert loaded.horizons == (6,) and loaded.window_length() == 64 and loaded.window_length(128) == 128
    assert loaded.n_outputs == 3 and loaded.in_chans == C and loaded.interval == "60"


def test_metadata_written_before_CheckpointMeta_still_loads(tmp_path):
    """A checkpoint of the older trainer: task only in the model config, window only in train_config, no
    normalisation clip, no threshold; and a regression fold's label spec holding its horizons."""
    old = stored(normalisation={"mean": [0.0] * C, "std": [1.0] * C}, label_spec=None)
    del old["task"], old["window"]
    model = reference.ConvNeXt1d(in_chans=C, **SHAPE).eval()
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(
        tensors,
        str(tmp_path / "old.safetensors"),
        {"format": FORMAT, "version": VERSION, "meta": json.dumps(old)},
    )
    _, meta = load_checkpoint(tmp_path / "old.safetensors", fused=False)
    assert meta.task == "classification" and meta.threshold is None and meta.window is None
    assert meta.window_length() == 64  # from train_config
    assert meta.normalisation.clip == 10.0  # the trainer's clip, which it applied without saying
    regression = CheckpointMeta.from_dict(
        stored(
            model=model_config("regression", 3),
            task="regression",
            label_spec={"horizons": [1, 4, 12]},
            target_scale=[0.01, 0.02, 0.03],
            train_config={},
            window=None,
        )
    )
    assert regression.horizons == (1, 4, 12) and regression.n_outputs == 3
    assert regression.window_length() == DEFAULT_WINDOW


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("model", [1, 2], "'model' must be a mapping"),
        ("feature_spec", {"rsi_period": 14, "moon_phase": 1}, "feature spec is not understood.*moon_phase"),
        ("feature_spec", "default", "feature spec is not understood"),
        ("normalisation", {"mean": [0.0] * C}, "normalisation 'std' must be a list"),
        ("normalisation", {"mean": [0.0] * C, "std": [0.0] * C}, "'std' must be finite numbers > 0"),
        ("normalisation", {"mean": [0.0] * C, "std": [1.0] * C, "clip": "10"}, "'clip' must be a number"),
        ("normalisation", {"mean": [0.0] * 3, "std": [1.0] * 3}, "normalisation has 3 entries, not in_chans"),
        ("task", "ranking", "unknown task 'ranking'"),
        ("task", "regression", "metadata says task 'regression' but the model is 'classification'"),
        ("window", 16, "'window' must be an int >= 32"),
        ("window", "64", "'window' must be an int >= 32"),
        ("window", True, "'window' must be an int >= 32"),
        ("label_spec", {"kind": "lunar"}, "label spec is not understood"),
        ("target_scale", [0.01, -1.0], "'target_scale' must be a list of finite numbers > 0"),
        ("target_scale", 0.01, "'target_scale' must be a list"),
        ("fold", -1, "'fold' must be an int >= 0"),
        ("ranges", {"holdout": ["a", "b"]}, "unknown range 'holdout'"),
        ("ranges", {"test": ["2024-01-01"]}, "'ranges.test' must be"),
        ("train_config", [], "'train_config' must be a mapping"),
        ("metrics", "good", "'metrics' must be a mapping"),
        ("universe", {"symbols": ["BTCUSDT"]}, "universe block is not understood"),
        ("threshold", "0.5", "'threshold' must be a finite number"),
        ("threshold", float("inf"), "'threshold' must be a finite number"),
        ("threshold", 1.5, r"'threshold' must be in \[0, 1\] for classification"),
        ("threshold", -0.01, r"'threshold' must be in \[0, 1\] for classification"),
        ("variant", 3, "'variant' must be a string"),
    ],
)
def test_bad_values_are_refused_naming_the_key(key, value, match):
    with pytest.raises(UserError, match=rf"^checkpoint 'x': .*{match}"):
        CheckpointMeta.from_dict(stored(**{key: value}), where="checkpoint 'x'")


def test_missing_and_unknown_keys_are_named():
    for key in ("model", "feature_spec", "normalisation"):
        data = stored()
        del data[key]
        with pytest.raises(UserError, match=rf"metadata lacks \['{key}'\]"):
            CheckpointMeta.from_dict(data)
    with pytest.raises(UserError, match=r"unknown keys \['treshold'\]"):
        CheckpointMeta.from_dict(stored(treshold=0.5))
    with pytest.raises(UserError, match="metadata must be a mapping"):
        CheckpointMeta.from_dict(["model"])


def test_a_channel_count_that_does_not_fit_the_model_is_refused():
    with pytest.raises(
        UserError, match=f"feature spec has {C} channels but the model expects in_chans={C + 1}"
    ):
        CheckpointMeta.from_dict(stored(model={**model_config(), "in_chans": C + 1}))
    with pytest.raises(UserError, match="'window' must be an int >= 32"):  # a copy is checked again
        CheckpointMeta.from_dict(stored()).replace(window=8)


def test_untrained_metadata_takes_raw_features_and_cannot_be_saved(tmp_path):
    model = reference.ConvNeXt1d(in_chans=C, **SHAPE).eval()
    meta = CheckpointMeta.untrained(model.config, SPEC, window=96)
    assert meta.normalisation is None and meta.window_length() == 96 and meta.task == "classification"
    with pytest.raises(UserError, match="no normalisation"):
        save_checkpoint(tmp_path / "u.safetensors", model, meta)


def test_the_live_normaliser_is_the_trainers_bit_for_bit(rng):
    """One implementation: normalising bar by bar gives exactly the batch result (float32, same order)."""
    norm = Normalisation(
        tuple(rng.normal(0, 3, C).tolist()), tuple(rng.uniform(1e-3, 5, C).tolist()), float(rng.uniform(1, 4))
    )
    features = (rng.standard_t(2, (C, 300)) * 5).astype(np.float32)
    batch = norm.apply(features)
    per_bar = norm.per_bar()
    for t in range(features.shape[1]):
        np.testing.assert_array_equal(per_bar(features[:, t]), batch[:, t])
    assert np.abs(batch).max() <= norm.clip and (np.abs(batch) == np.float32(norm.clip)).any(), (
        "clip exercised"
    )
    with pytest.raises(UserError, match=rf"expects features \[{C}, N\]"):
        norm.apply(features[:3])
