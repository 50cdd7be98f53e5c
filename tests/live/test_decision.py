"""One decision path: the backtest and the live loop turn a checkpoint's outputs into the same signals for
every task the trainer writes (classification; regression with one or several horizons), and a
checkpoint the loop cannot trade is refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnext_fast.cli import main
from convnext_fast.errors import UserError
from convnext_fast.prediction import checkpoint_decisions, model_outputs
from convnext_fast.trading.decision import DecisionPolicy, softmax

from .support import HISTORY, market, tiny_checkpoint, write_csv


def _threshold_in_a_gap(scores: np.ndarray) -> float:
    """A threshold near the median score but halfway between two neighbouring scores, so float noise
    between the batch (fused) and the one-bar (C++ session) forward can never flip a decision."""
    s = np.sort(np.abs(scores[np.isfinite(scores)]))
    mid = len(s) // 2
    gaps = np.diff(s[mid - 20 : mid + 20])
    k = mid - 20 + int(np.argmax(gaps))
    return float((s[k] + s[k + 1]) / 2)


@pytest.mark.parametrize(("task", "horizons"), [("regression", 1), ("regression", 3), ("classification", 1)])
def test_backtest_and_live_replay_give_identical_signals(tmp_path, rng, task, horizons, capsys):
    candles = market(HISTORY + 260, rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles, task=task, horizons=horizons)
    outputs, meta = model_outputs(str(ckpt), candles)
    policy = DecisionPolicy.from_meta(meta, 0.0)
    _, probs, score = policy.batch(outputs)
    if probs is not None:
        score = np.where(np.isfinite(outputs[:, 0]), probs[:, :2].max(axis=1), np.nan)
    tau = _threshold_in_a_gap(score)
    signals, _, _, _ = checkpoint_decisions(str(ckpt), candles, tau)

    out = tmp_path / "live.jsonl"
    argv = ["live", "--data", str(csv), "--checkpoint", str(ckpt), "--threshold", repr(tau)]
    assert main([*argv, "--out", str(out), "--state", str(tmp_path / "s.db")]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    bars = [r for r in records if r["event"] == "candle"]
    first = int(np.searchsorted(candles.start_ms, bars[0]["start_ms"]))
    assert [r["start_ms"] for r in bars] == candles.start_ms[first:].tolist()
    live = np.array([r["signal"] for r in bars])
    np.testing.assert_array_equal(live, signals[first:])
    assert set(live.tolist()) >= {-1, 1}, "the test should see both Long and Short decisions"
    if task == "regression":
        assert all(r["probs"] is None for r in bars)
        known = [r["pred"] for r in bars if r["pred"] is not None]
        np.testing.assert_allclose(known, score[first:][np.isfinite(score[first:])], rtol=1e-4, atol=1e-7)


def test_policy_reads_the_task_and_refuses_what_it_cannot_trade(rng):
    logits = rng.normal(0, 2, (50, 3))
    cls = DecisionPolicy.for_task("classification", {"num_classes": 3}, None, 0.4)
    sig, probs, _ = cls.batch(np.vstack([np.full((1, 3), np.nan), logits]))
    np.testing.assert_allclose(probs[1:], softmax(logits))
    assert sig[0] == 0 and probs[0].tolist() == [0.0, 0.0, 1.0]  # no window yet: Hold
    assert [cls.one(row)[0] for row in logits] == sig[1:].tolist()

    scale = rng.uniform(0.001, 0.01, 3).tolist()
    reg = DecisionPolicy.for_task("regression", {"num_outputs": 3}, scale, 0.004)
    out = rng.normal(0, 1, (50, 3))
    sig, probs, pred = reg.batch(out)
    assert probs is None
    np.testing.assert_allclose(pred, out[:, 0] * scale[0])
    assert sig.tolist() == np.where(pred > 0.004, 1, np.where(pred < -0.004, -1, 0)).tolist()
    assert [reg.one(row)[0] for row in out] == sig.tolist()
    # ties and the threshold itself: the one-bar form decides exactly as the batch form
    edge = np.log(np.array([[0.4, 0.4, 0.2], [0.4, 0.3, 0.3], [0.5, 0.5, 0.0 + 1e-9], [0.41, 0.2, 0.39]]))
    batch_sig, batch_probs, _ = cls.batch(edge)
    for row, s_, p_ in zip(edge, batch_sig, batch_probs, strict=True):
        one_sig, one_probs, _ = cls.one(row)
        assert one_sig == s_ and np.array_equal(one_probs, p_)
    assert cls.one(np.array([np.nan, 0.0, 0.0]))[0] == 0

    # (an unknown task, or a task that contradicts the model config, never gets this far: CheckpointMeta
    # refuses it, tests/train/test_checkpoint_meta.py)
    refused = [
        (("regression", {"num_outputs": 3}, [0.1]), "target_scale"),
        (("regression", {"num_outputs": 1}, None), "target_scale"),
        (("regression", {"num_outputs": 1}, [float("nan")]), "target_scale"),
        (("classification", {"num_classes": 5}, None), "5 classes"),
        (("ranking", {}, None), "'ranking' cannot be traded"),
    ]
    for (task, config, scale), match in refused:
        with pytest.raises(UserError, match=match):
            DecisionPolicy.for_task(task, config, scale, 0.5)


def test_live_refuses_an_untradeable_checkpoint_in_one_line(tmp_path, rng, capsys):
    from convnext_fast.train import load_checkpoint, save_checkpoint

    candles = market(HISTORY + 20, rng)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles, task="regression", horizons=2)
    model, meta = load_checkpoint(ckpt, fused=False)
    # e.g. an older trainer that wrote no target scale
    bad = save_checkpoint(tmp_path / "bad.safetensors", model, meta.replace(target_scale=None))
    csv = write_csv(tmp_path / "c.csv", candles)
    assert (
        main(["live", "--data", str(csv), "--checkpoint", str(bad), "--state", str(tmp_path / "s.db")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "target_scale" in err[0], err
