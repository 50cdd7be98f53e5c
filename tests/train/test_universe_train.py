"""One model over a universe of symbols: walk-forward training end to end on a small SYNTHETIC universe."""

from __future__ import annotations

import json

import pytest
import torch

from convnext_fast.cli import main
from convnext_fast.data.synthetic import synthetic_universe
from convnext_fast.errors import UserError
from convnext_fast.features.pipeline import FeatureSpec
from convnext_fast.train import TrainConfig, load_checkpoint, train

from .tiny_run import TINY, TINY_ARGS

BASE = {**TINY, "epochs": 1, "warmup_epochs": 0, "folds": 2, "fused": False, "device": "cpu", "norm_bars": 96,
        "label": {"horizon": 4, "threshold": 0.004}, "max_windows": 1200}  # fmt: skip


@pytest.mark.parametrize("embedding", [False, True])
def test_universe_run_trains_one_model_over_symbols(tmp_path, rng, embedding):
    universe = synthetic_universe(3, 1400, seed=int(rng.integers(2**31)))
    config = TrainConfig(
        **BASE, out=str(tmp_path / "r"), symbol_embedding=embedding, seed=int(rng.integers(99))
    )
    result = train(config, candles=universe)
    assert len(result.folds) == 2
    for fold in result.folds:
        r = fold["ranges"]
        assert r["train"][1] < r["val"][0] <= r["val"][1] < r["test"][0]
        assert fold["test"]["model"]["n"] == fold["n_windows"]["test"]
    model, meta = load_checkpoint(result.folds[-1]["checkpoint"], fused=False, allow_universe=True)
    # Callers that would build single-symbol inputs (the live loop today) get a clear error instead.
    with pytest.raises(UserError, match="trained on a universe"):
        load_checkpoint(result.folds[-1]["checkpoint"], fused=False)
    channels = FeatureSpec().n_channels
    assert meta.universe.symbols == tuple(universe)
    assert meta.normalisation.rolling_bars == 96
    # Off: the model is a single-symbol model's shape; on: one more input channel per symbol (stem bias).
    assert model.config["in_chans"] == channels + (3 if embedding else 0)
    x = torch.randn(2, model.config["in_chans"], 64)
    assert torch.isfinite(model(x)).all()
    assert not list((tmp_path / "r" / "universe").rglob("*.bin")), (
        "the memory-mapped inputs are removed at the end"
    )
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["symbol_embedding"] is embedding


def test_symbol_embedding_is_a_per_symbol_stem_bias(rng):
    """The one-hot channels through the stem convolution add the same vector at every stem position."""
    from convnext_fast.reference import ConvNeXt1d

    model = ConvNeXt1d(in_chans=5 + 3, dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), num_outputs=3)
    conv = model.stem[0]
    x = torch.randn(1, 5, 64)
    onehot = torch.zeros(1, 3, 64)
    onehot[:, 1] = 1.0
    with torch.no_grad():
        delta = conv(torch.cat([x, onehot], 1)) - conv(torch.cat([x, torch.zeros_like(onehot)], 1))
    assert torch.allclose(delta, delta[:, :, :1].expand_as(delta), atol=1e-6)
    assert delta.abs().max() > 0


def test_cli_universe_and_its_errors(tmp_path, rng, capsys):
    args = [
        "train",
        *TINY_ARGS,
        "--epochs",
        "1",
        "--folds",
        "2",
        "--norm-bars",
        "96",
        "--max-windows",
        "1800",
    ]
    out = str(tmp_path / "c")
    assert main([*args, "--universe", "synthetic:2x2200", "--out", out, "--horizon", "4", "--htf", "4"]) == 0
    meta = load_checkpoint(json.loads((tmp_path / "c" / "results.json").read_text())["folds"][0]["checkpoint"],
                           fused=False, allow_universe=True)[1]  # fmt: skip
    assert meta.universe.htf == (4,) and meta.in_chans == 2 * FeatureSpec().n_channels
    assert main([*args, "--universe", "synth:3", "--out", out]) == 2
    assert main([*args, "--universe", "synthetic:2", "--symbols", "A,B", "--out", out]) == 2
    assert main([*args, "--htf", "4", "--data", "x.csv", "--out", out]) == 2
    assert main([*args, "--symbols", "A,A", "--data", "x", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "synthetic:N" in err and "not both" in err and "need a universe" in err and "more than once" in err
    with pytest.raises(UserError, match="--symbols needs --data"):
        train(TrainConfig(**BASE, out=str(tmp_path / "d"), symbols=("A", "B")))
