"""``train --fold K``: one fold of a walk-forward run, so folds can be farmed out to other processes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.errors import UserError
from convnext_fast.train import TrainConfig, train
from convnext_fast.train.__main__ import main
from convnext_fast.train.records import to_jsonable

from .tiny_run import TINY, TINY_ARGS, write_candles_csv


def config(out, seed, **overrides) -> TrainConfig:
    base = {
        **TINY,
        "out": str(out),
        "epochs": 2,
        "warmup_epochs": 1,
        "folds": 2,
        "device": "cpu",
        "label": {"horizon": 4, "threshold": 0.004},
        "seed": seed,
    }
    return TrainConfig(**{**base, **overrides})


@pytest.mark.slow
def test_one_fold_at_a_time_equals_the_full_run_and_pools_when_the_last_finishes(tmp_path, rng):
    candles = synthetic_candles(2400, seed=int(rng.integers(2**31)))
    seed = int(rng.integers(1000))
    full = train(config(tmp_path / "full", seed), candles=candles)

    # Folds out of order, as independent workers would finish them.
    one = train(config(tmp_path / "farm", seed, fold=1), candles=candles)
    assert [f["fold"] for f in one.folds] == [1]
    assert not (tmp_path / "farm" / "results.json").exists(), "the run is not pooled before every fold is"
    assert not (tmp_path / "farm" / "fold_0").exists(), "--fold 1 must not train fold 0"
    assert to_jsonable(one.folds[0]["test"]) == to_jsonable(full.folds[1]["test"])
    a = load_file(tmp_path / "full" / "fold_1" / "best.safetensors")
    b = load_file(tmp_path / "farm" / "fold_1" / "best.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)
    epochs = (tmp_path / "farm" / "fold_1" / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == one.folds[0]["epochs_run"]

    with pytest.raises(UserError, match="different settings"):
        train(config(tmp_path / "farm", seed + 1, fold=0), candles=candles)
    with pytest.raises(UserError, match="finished fold 1"):
        train(config(tmp_path / "farm", seed, fold=1), candles=candles)

    last = train(config(tmp_path / "farm", seed, fold=0), candles=candles)
    assert [f["fold"] for f in last.folds] == [0, 1]
    pooled = json.loads((tmp_path / "farm" / "results.json").read_text())["pooled"]
    assert pooled == json.loads((tmp_path / "full" / "results.json").read_text())["pooled"]
    assert to_jsonable(last.pooled) == to_jsonable(full.pooled)


def test_fold_out_of_range_is_one_line_error(tmp_path, rng, capsys):
    csv = tmp_path / "candles.csv"
    write_candles_csv(synthetic_candles(600, seed=int(rng.integers(2**31))), csv)
    rc = main(["--data", str(csv), *TINY_ARGS, "--folds", "2", "--fold", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "fold must be in [0, 2)" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match=r"fold must be in \[0, 1\)"):
        config(tmp_path, 0, test_start="2024-01-01", fold=1)
