"""``convnext-fast backtest`` wiring: real candles + saved probabilities/signals → report, trades, sweep."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from convnext_fast.errors import UserError
from convnext_fast.trading import cli
from tests.trading.market import random_bars, random_signals


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(list(argv)))


def write_csv(path, rng, n=300):
    o, h, lo, c = random_bars(rng, n)
    times = np.datetime64("2024-01-01T00:00") + np.arange(n) * np.timedelta64(1, "h")
    rows = [
        f"{t.astype(str).replace('T', ' ')}:00,{a},{b},{d},{e},{v}"
        for t, a, b, d, e, v in zip(times, o, h, lo, c, rng.uniform(1, 9, n), strict=True)
    ]
    path.write_text("timestamp,Open,High,Low,Close,Volume\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_backtest_real_candles_from_probs(btc_csv, rng, tmp_path, capsys):
    n = sum(1 for _ in btc_csv.open()) - 1
    probs = rng.dirichlet([1.0, 1.0, 3.0], n)
    np.save(tmp_path / "probs.npy", probs)
    out = tmp_path / "report"
    code = run_cli(
        "--data",
        str(btc_csv),
        "--probs",
        str(tmp_path / "probs.npy"),
        "--threshold",
        "0.6",
        "--out",
        str(out),
        "--stop-loss",
        "0.03",
        "--sweep",
        "0.5,0.6,0.7",
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert (out / "report.html").stat().st_size > 10_000
    trades = (out / "trades.csv").read_text().splitlines()
    assert trades[0].startswith("entry_bar,exit_bar")
    assert f"{n} bars, {len(trades) - 1} trades" in printed
    sweep_lines = [line.split() for line in printed.splitlines() if line.strip().startswith("0.600")]
    assert len(sweep_lines) == 1 and int(sweep_lines[0][-1]) == len(trades) - 1  # the sweep agrees at τ=0.6


def test_backtest_from_signals(rng, tmp_path, capsys):
    csv = write_csv(tmp_path / "bars.csv", rng)
    np.save(tmp_path / "signals.npy", random_signals(rng, 300))
    assert (
        run_cli("--data", str(csv), "--signals", str(tmp_path / "signals.npy"), "--out", str(tmp_path / "r"))
        == 0
    )
    assert "300 bars" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--probs", "{tmp}/short.npy"], r"expected shape \(300, 3\)"),
        (["--probs", "{tmp}/missing.npy"], "cannot read"),
        (["--probs", "{tmp}/probs.npy", "--threshold", "1.5"], r"threshold must be in \[0, 1\]"),
        (["--signals", "{tmp}/signals.npy", "--sweep", "0.5"], "--sweep needs probabilities"),
        (["--probs", "{tmp}/probs.npy", "--sweep", "0.5,high"], "comma-separated"),
        (["--probs", "{tmp}/probs.npy", "--taker-fee-bps", "-2"], "taker_fee_bps"),
    ],
)
def test_user_mistakes_are_user_errors(extra, message, rng, tmp_path):
    csv = write_csv(tmp_path / "bars.csv", rng)
    np.save(tmp_path / "probs.npy", rng.dirichlet([1, 1, 1], 300))
    np.save(tmp_path / "short.npy", rng.dirichlet([1, 1, 1], 299))
    np.save(tmp_path / "signals.npy", random_signals(rng, 300))
    args = ["--data", str(csv), "--out", str(tmp_path / "r")] + [a.format(tmp=tmp_path) for a in extra]
    with pytest.raises(UserError, match=message):
        run_cli(*args)


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--data"):
        run_cli("--data", str(tmp_path / "nope.csv"), "--signals", "x.npy")


def test_backtest_from_checkpoint_aligns_predictions_with_bars(rng, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pipeline = pytest.importorskip("convnext_fast.features.pipeline")
    from convnext_fast.reference import ConvNeXt1d
    from convnext_fast.train import save_checkpoint
    from convnext_fast.train.prepare import apply_normalisation

    model = ConvNeXt1d(
        dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), drop_path_rate=0.0, layer_scale_init=1.0
    ).eval()
    spec = pipeline.FeatureSpec()
    norm = {"mean": rng.normal(0, 0.1, 20).tolist(), "std": rng.uniform(0.5, 2, 20).tolist(), "clip": 5.0}
    ckpt = save_checkpoint(
        tmp_path / "model.safetensors",
        model,
        {"feature_spec": spec.to_dict(), "normalisation": norm, "window": 64},
    )
    csv = write_csv(tmp_path / "bars.csv", rng, n=400)
    from convnext_fast.data.candles import Candles

    candles = Candles.from_csv(csv)
    outputs, _ = cli.model_outputs(str(ckpt), candles)
    first = spec.warmup + 64 - 1  # the first bar with a complete, finite window
    assert np.isnan(outputs[:first]).all() and np.isfinite(outputs[first:]).all()
    t = int(rng.integers(first, 400))
    feats = pipeline.compute_features(candles.open, candles.high, candles.low, candles.close, candles.volume)
    x = torch.from_numpy(np.ascontiguousarray(apply_normalisation(feats, norm)[None, :, t - 63 : t + 1]))
    with torch.inference_mode():
        expected = model(x).double().numpy()[0]  # raw logits: the decision policy applies softmax
    np.testing.assert_allclose(outputs[t], expected, rtol=1e-4, atol=1e-6)  # fused vs reference model

    assert (
        run_cli(
            "--data", str(csv), "--checkpoint", str(ckpt), "--threshold", "0.34", "--out", str(tmp_path / "r")
        )
        == 0
    )
    assert "400 bars" in capsys.readouterr().out


@pytest.mark.slow
def test_checkpoint_backtest_trades_only_its_out_of_sample_bars(rng, tmp_path, capsys):
    """With a checkpoint, the default is to trade from its test range on (never the bars it trained on);
    --start all / a date override that, and a start after the data is a user error."""
    pytest.importorskip("torch")
    pipeline = pytest.importorskip("convnext_fast.features.pipeline")
    from convnext_fast.data.candles import Candles
    from convnext_fast.reference import ConvNeXt1d
    from convnext_fast.train import save_checkpoint

    csv = write_csv(tmp_path / "bars.csv", rng, n=400)
    candles = Candles.from_csv(csv)
    test_start = int(rng.integers(300, 380))
    norm = {"mean": [0.0] * 20, "std": [1.0] * 20, "clip": 5.0}
    meta = {
        "feature_spec": pipeline.FeatureSpec().to_dict(),
        "normalisation": norm,
        "window": 64,
        "ranges": {"test": [str(np.datetime64(int(candles.start_ms[i]), "ms")) for i in (test_start, -1)]},
    }
    model = ConvNeXt1d(dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), drop_path_rate=0.0).eval()
    ckpt = str(save_checkpoint(tmp_path / "model.safetensors", model, meta))

    assert run_cli("--data", str(csv), "--checkpoint", ckpt, "--out", str(tmp_path / "a")) == 0
    out = capsys.readouterr().out
    assert "out-of-sample test range" in out and f"{400 - test_start} bars" in out
    assert (
        run_cli("--data", str(csv), "--checkpoint", ckpt, "--start", "all", "--out", str(tmp_path / "b")) == 0
    )
    assert "400 bars" in capsys.readouterr().out
    with pytest.raises(UserError, match="--start"):
        run_cli(
            "--data", str(csv), "--checkpoint", ckpt, "--start", "2999-01-01", "--out", str(tmp_path / "c")
        )
