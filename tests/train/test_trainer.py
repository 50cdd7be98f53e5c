"""End-to-end walk-forward runs on a short synthetic market with a tiny model."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.errors import UserError
from convnext_fast.train import TrainConfig, load_checkpoint, train
from convnext_fast.train import loop as train_loop
from convnext_fast.train import trainer as trainer_module
from convnext_fast.train.__main__ import main
from convnext_fast.train.inputs import WindowDataset, feature_matrix
from convnext_fast.train.prepare import apply_normalisation
from convnext_fast.train.records import to_jsonable

from .tiny_run import TINY, TINY_ARGS, write_candles_csv

N_BARS = 2400


@pytest.fixture
def candles(rng):
    return synthetic_candles(N_BARS, seed=int(rng.integers(2**31)))


def tiny_config(out, **overrides) -> TrainConfig:
    base = {
        **TINY,
        "out": str(out),
        "epochs": 2,
        "warmup_epochs": 1,
        "folds": 2,
        "fused": False,
        "device": "cpu",
        "label": {"horizon": 4, "threshold": 0.004},
        "seed": int(torch.randint(1000, ()).item()),
    }
    return TrainConfig(**{**base, **overrides})


def test_walk_forward_run_scores_folds_next_to_baselines(tmp_path, candles):
    config = tiny_config(tmp_path / "run")
    result = train(config, candles=candles)
    assert len(result.folds) == 2
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["pooled"] == json.loads(json.dumps(saved["pooled"]))  # strict JSON (no NaN)
    for fold in result.folds:
        n = fold["n_windows"]
        assert min(n.values()) > 0
        assert fold["ranges"]["train"][1] < fold["ranges"]["val"][0] < fold["ranges"]["test"][0]
        scores = fold["test"]
        assert scores["model"]["n"] == n["test"]
        for baseline in ("majority_class", "previous_bar_direction"):
            assert scores["baselines"][baseline]["n"] == n["test"], "baselines must score the same bars"
        for key in ("accuracy", "balanced_accuracy", "macro_f1", "direction_accuracy", "log_loss"):
            assert 0.0 <= scores["model"][key] < 10.0, key
        assert np.sum(scores["model"]["confusion"]) == n["test"]
    pooled_n = sum(f["n_windows"]["test"] for f in result.folds)
    assert result.pooled["model"]["n"] == pooled_n
    log_lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(log_lines) == sum(f["epochs_run"] for f in result.folds)
    assert all(np.isfinite(json.loads(line)["train_loss"]) for line in log_lines)
    assert result.train_samples_per_s > 0


def test_best_checkpoint_reproduces_the_saved_test_predictions(tmp_path, candles):
    result = train(tiny_config(tmp_path / "run", folds=1, epochs=1), candles=candles)
    fold_dir = tmp_path / "run" / "fold_0"
    saved = np.load(fold_dir / "predictions.npz")
    for fused in (False, True):
        model, meta = load_checkpoint(fold_dir / "best.safetensors", fused=fused)
        assert meta.metrics["test"]["model"]["accuracy"] == pytest.approx(
            result.folds[0]["test"]["model"]["accuracy"]
        )
        # Rebuild the test inputs from the raw candles using only what the checkpoint says.
        features = apply_normalisation(feature_matrix(candles, meta.feature_spec), meta.normalisation)
        ds = WindowDataset(features, np.zeros(len(candles), np.int64), saved["end_idx"], window=meta.window)
        x, _ = ds[np.arange(len(ds))]
        with torch.no_grad():
            probs = torch.softmax(model(x), dim=1).numpy()
        np.testing.assert_allclose(probs, saved["outputs"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_same_seed_gives_the_same_metrics_and_resume_picks_up_exactly(tmp_path, candles, monkeypatch, rng):
    seed = int(rng.integers(1000))
    first = train(tiny_config(tmp_path / "a", seed=seed), candles=candles)
    again = train(tiny_config(tmp_path / "b", seed=seed), candles=candles)
    assert to_jsonable(again.pooled) == to_jsonable(first.pooled)  # JSON form: NaN (undefined) compares equal
    assert to_jsonable([f["test"] for f in again.folds]) == to_jsonable([f["test"] for f in first.folds])

    # Interrupt the fourth epoch (fold 1's second), then resume: fold 0 is skipped, fold 1 continues from
    # its last epoch, and the result must equal the uninterrupted run.
    calls = {"n": 0}
    real_epoch = train_loop.train_epoch

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path / "c", seed=seed), candles=candles)
    monkeypatch.setattr(train_loop, "train_epoch", real_epoch)
    assert (tmp_path / "c" / "fold_0" / "result.json").is_file()
    assert not (tmp_path / "c" / "fold_1" / "result.json").exists()
    assert (tmp_path / "c" / "fold_1" / "last.safetensors").is_file()
    calls["n"] = 0
    monkeypatch.setattr(train_loop, "train_epoch", interrupted)  # now only counts: 1 epoch left to run
    resumed = train(tiny_config(tmp_path / "c", seed=seed, resume=True), candles=candles)
    monkeypatch.setattr(train_loop, "train_epoch", real_epoch)
    assert calls["n"] == 1, "resume must re-run only the interrupted epoch"
    assert to_jsonable(resumed.pooled) == to_jsonable(first.pooled)
    with pytest.raises(UserError, match="different settings"):
        train(tiny_config(tmp_path / "c", seed=seed + 1, resume=True), candles=candles)
    with pytest.raises(UserError, match="already holds a finished run"):
        train(tiny_config(tmp_path / "c", seed=seed), candles=candles)


def test_early_stopping_halts_after_patience_epochs_without_improvement(tmp_path, candles, monkeypatch, rng):
    patience = int(rng.integers(1, 3))
    best_epoch = int(rng.integers(1, 3))
    losses = iter([1.0 - 0.1 * e for e in range(best_epoch)] + [5.0] * 10)
    monkeypatch.setattr(trainer_module._Fold, "val_loss", lambda self, model: next(losses))
    config = tiny_config(tmp_path / "run", folds=1, epochs=10, patience=patience, tensorboard=True)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.warns(UserWarning, match="tensorboard"):
            result = train(config, candles=candles)
    else:
        result = train(config, candles=candles)
        assert any((tmp_path / "run" / "tensorboard").iterdir())
    fold = result.folds[0]
    assert fold["best_epoch"] == best_epoch
    assert fold["epochs_run"] == best_epoch + patience


def test_regression_with_fused_model_ema_bf16_and_augmentation(tmp_path, candles):
    config = tiny_config(
        tmp_path / "run",
        task="regression",
        horizons=(1, 4),
        folds=1,
        epochs=1,
        max_windows=400,
        fused=True,
        ema_decay=0.9,
        precision="bf16",
        augment=True,
    )
    result = train(config, candles=candles)
    scores = result.folds[0]["test"]
    for key in ("ic", "rank_ic", "direction_accuracy"):
        assert -1.0 <= scores["model"][key] <= 1.0, key
        assert len(scores["model"][f"{key}_per_horizon"]) == 2
    assert np.isfinite(scores["baselines"]["previous_bar_direction"]["ic"])
    _, meta = load_checkpoint(tmp_path / "run" / "fold_0" / "best.safetensors", fused=False)
    assert meta.n_outputs == 2 and len(meta.target_scale) == 2 and meta.horizons == (1, 4)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"window": 16}, "window"),
        ({"task": "ranking"}, "task"),
        ({"precision": "fp8"}, "precision"),
        ({"variant": "gigantic", "dims": None, "depths": None}, "variant"),
        ({"dims": (8, 16, 32, 64), "depths": None}, "dims and depths"),
        ({"test_start": "not a date"}, "test_start"),
        ({"ema_decay": 1.5}, "ema_decay"),
        ({"epochs": 0}, "epochs"),
        ({"label": {"horizon": 0}}, "horizon"),
        ({"label": {"colour": "red"}}, "label"),
        ({"features": {"rsi_period": 0}}, "rsi_period"),
    ],
)
def test_bad_config_is_a_user_error_naming_the_field(tmp_path, overrides, match):
    with pytest.raises(UserError, match=match):
        tiny_config(tmp_path, **overrides)


def test_command_line_trains_from_a_csv_and_reports_errors_in_one_line(tmp_path, candles, capsys):
    csv = tmp_path / "candles.csv"
    write_candles_csv(candles, csv)
    common = ["--data", str(csv), *TINY_ARGS]
    rc = main(
        [
            *common,
            "--epochs",
            "1",
            "--folds",
            "1",
            "--model",
            "reference",
            "--horizon",
            "4",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0
    # stderr is not a terminal here: no progress bars, one plain line per epoch instead
    assert "fold 0 epoch 1/1:" in captured.err and "ETA" in captured.err and "\r" not in captured.err
    assert "verdict (" in out and "buy-and-hold" in out and "τ (chosen on validation)" in out
    assert "majority class" in out and "previous-bar direction" in out and "pooled" in out
    rc = main(
        [*common, "--epochs", "1", "--precision", "fp16", "--device", "cpu", "--out", str(tmp_path / "bad")]
    )
    err = capsys.readouterr().err
    assert (
        rc == 2
        and err.startswith("convnext-fast: error:")
        and "fp16" in err
        and len(err.strip().splitlines()) == 1
    )
    rc = main(["--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")])
    assert rc == 2 and "--data" in capsys.readouterr().err


def test_test_start_makes_one_fold_tested_from_that_date_on(tmp_path, candles, rng):
    cut = int(rng.integers(N_BARS * 3 // 4, N_BARS - 200))
    day = str(np.datetime64(int(candles.start_ms[cut]), "ms").astype("datetime64[h]"))
    result = train(tiny_config(tmp_path / "run", epochs=1, test_start=day), candles=candles)
    (fold,) = result.folds
    first_test = np.datetime64(fold["ranges"]["test"][0])
    assert np.datetime64(day) <= first_test < np.datetime64(day) + np.timedelta64(TINY["stride"], "h")
    assert fold["ranges"]["test"][1] >= str(np.datetime64(int(candles.start_ms[-40]), "ms"))
    with pytest.raises(UserError, match="test-start"):
        train(tiny_config(tmp_path / "early", epochs=1, test_start="2000-01-01"), candles=candles)
