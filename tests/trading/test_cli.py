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


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--taker-fee-bps", "-2", "must be >= 0, got -2"), ("--leverage", "0", "must be > 0, got 0")],
)
def test_bad_trading_rules_are_refused_naming_the_flag(flag, value, message, tmp_path, capsys):
    """A cost or limit out of range fails while parsing, with the flag's name (not BacktestConfig's field)."""
    with pytest.raises(SystemExit) as done:
        run_cli("--data", "bars.csv", "--probs", "p.npy", "--out", str(tmp_path / "r"), flag, value)
    assert done.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--data"):
        run_cli("--data", str(tmp_path / "nope.csv"), "--signals", "x.npy")


def test_backtest_from_checkpoint_aligns_predictions_with_bars(rng, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pipeline = pytest.importorskip("convnext_fast.features.pipeline")
    from convnext_fast.prediction import model_outputs
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
    outputs, _ = model_outputs(str(ckpt), candles)
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
        "threshold": 0.5,  # what the trainer chose on validation bars: --threshold auto (the default) uses it
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


def _checkpoint_with_ranges(tmp_path, candles, meta_extra):
    pipeline = pytest.importorskip("convnext_fast.features.pipeline")
    from convnext_fast.reference import ConvNeXt1d
    from convnext_fast.train import save_checkpoint

    iso = [str(np.datetime64(int(t), "ms")) for t in candles.start_ms]
    meta = {
        "feature_spec": pipeline.FeatureSpec().to_dict(),
        "normalisation": {"mean": [0.0] * 20, "std": [1.0] * 20, "clip": 5.0},
        "window": 64,
        "label_spec": {"kind": "fixed", "horizon": 4, "threshold": 0.002},
        "ranges": {"train": [iso[0], iso[199]], "test": [iso[250], iso[-1]]},
        **meta_extra,
    }
    model = ConvNeXt1d(
        dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), drop_path_rate=0.0, layer_scale_init=1.0
    ).eval()
    return str(save_checkpoint(tmp_path / "model.safetensors", model, meta))


def test_backtest_says_tau_and_its_source_and_a_verdict_against_baselines(rng, tmp_path, capsys):
    pytest.importorskip("torch")
    from convnext_fast.data.candles import Candles
    from convnext_fast.data.labels import LabelSpec, make_labels
    from convnext_fast.prediction import model_outputs
    from convnext_fast.trading.decision import DecisionPolicy

    csv = write_csv(tmp_path / "bars.csv", rng, n=400)
    candles = Candles.from_csv(csv)
    tau = 0.34
    ckpt = _checkpoint_with_ranges(tmp_path, candles, {"threshold": tau})
    assert run_cli("--data", str(csv), "--checkpoint", ckpt, "--out", str(tmp_path / "r")) == 0
    out = capsys.readouterr().out
    assert f"τ = {tau:g} (chosen on the validation bars of checkpoint {ckpt})" in out
    verdict = next(line for line in out.splitlines() if line.startswith("verdict ("))
    # The numbers by hand: labels from the checkpoint's spec, the majority class of its train bars.
    labels = make_labels(candles.close, candles.high, candles.low, LabelSpec(horizon=4, threshold=0.002))
    outputs, meta = model_outputs(ckpt, candles)
    _, probs, _ = DecisionPolicy.from_meta(meta, tau).batch(outputs)
    scored = (np.arange(400) >= 250) & (labels >= 0) & np.isfinite(outputs).all(axis=1)
    majority = np.bincount(labels[:200][labels[:200] >= 0], minlength=3).argmax()
    accuracy = np.mean(probs[scored].argmax(axis=1) == labels[scored])
    assert f"accuracy {accuracy:.1%}" in verdict
    assert f"majority class {np.mean(labels[scored] == majority):.1%}" in verdict and "(n=" in verdict
    hold = candles.close[-1] / candles.close[250] - 1
    assert f"buy-and-hold {hold:+.2%}" in verdict
    page = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert ckpt in page and f"<td>{tau:g}</td>" in page and f"buy-and-hold {hold:+.2%}" in page

    plain = _checkpoint_with_ranges(tmp_path / "old", candles, {})
    with pytest.raises(UserError, match="no validation-chosen threshold"):
        run_cli(
            "--data", str(csv), "--checkpoint", plain, "--threshold", "auto", "--out", str(tmp_path / "s")
        )
    assert (
        run_cli("--data", str(csv), "--checkpoint", plain, "--threshold", "0.4", "--out", str(tmp_path / "s"))
        == 0
    )
    assert "τ = 0.4 (--threshold)" in capsys.readouterr().out


def test_sweep_rows_and_verdict_warn_when_too_few_trades(rng, tmp_path, capsys):
    from convnext_fast.trading.verdict import MIN_TRADES_FOR_SHARPE

    csv = write_csv(tmp_path / "bars.csv", rng)
    probs = np.tile([0.1, 0.1, 0.8], (300, 1))
    probs[100] = [0.9, 0.05, 0.05]  # one confident Long: a single trade at any τ below 0.9
    probs[::7] = [0.45, 0.44, 0.11]  # many weak calls, traded only below 0.45
    np.save(tmp_path / "p.npy", probs)
    argv = ["--data", str(csv), "--probs", str(tmp_path / "p.npy"), "--out", str(tmp_path / "r")]
    assert run_cli(*argv, "--threshold", "0.6", "--sweep", "0.3,0.6") == 0
    out = capsys.readouterr().out
    assert "τ = 0.6 (--threshold)" in out
    verdict = next(line for line in out.splitlines() if line.startswith("verdict ("))
    assert f"WARNING only 1 trade: with fewer than {MIN_TRADES_FOR_SHARPE} trades" in verdict
    assert "no baseline comparison" not in verdict  # saved probabilities carry no labels: nothing claimed
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()[:5] in ("0.300", "0.600")}
    assert "WARNING only 1 trade" in rows["0.600"]
    n_low = int(rows["0.300"].split()[4])
    assert (n_low < MIN_TRADES_FOR_SHARPE) == ("WARNING" in rows["0.300"])
