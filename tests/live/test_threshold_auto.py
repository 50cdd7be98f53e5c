"""``live --threshold auto`` trades at the τ the trainer stored in the checkpoint, says so on its start
record, and refuses a checkpoint without one in one line."""

from __future__ import annotations

import json

import numpy as np

from convnext_fast.cli import main
from convnext_fast.prediction import checkpoint_decisions

from .support import HISTORY, market, tiny_checkpoint, write_csv


def _with_threshold(path, tau):
    from convnext_fast.train import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(path, fused=False)
    return save_checkpoint(path.with_name("auto.safetensors"), model, meta.replace(threshold=tau))


def test_live_auto_trades_at_the_checkpoints_threshold(tmp_path, rng, capsys):
    candles = market(HISTORY + 120, rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    plain = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles)
    tau = float(rng.uniform(0.36, 0.5))
    ckpt = _with_threshold(plain, tau)
    signals, _, _, _ = checkpoint_decisions(str(ckpt), candles, tau)

    out = tmp_path / "live.jsonl"
    argv = ["live", "--data", str(csv), "--checkpoint", str(ckpt), "--threshold", "auto"]
    assert main([*argv, "--out", str(out), "--state", str(tmp_path / "s.db")]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    start = records[0]
    assert start["event"] == "start"
    assert f"τ {tau:g} (chosen on the validation bars of checkpoint {ckpt})" in json.dumps(
        start, ensure_ascii=False
    )
    bars = [r for r in records if r["event"] == "candle"]
    first = int(np.searchsorted(candles.start_ms, bars[0]["start_ms"]))
    np.testing.assert_array_equal([r["signal"] for r in bars], signals[first:])

    capsys.readouterr()
    argv = ["live", "--data", str(csv), "--checkpoint", str(plain), "--threshold", "auto"]
    assert main([*argv, "--state", str(tmp_path / "t.db"), "--out", str(tmp_path / "t.jsonl")]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert (
        len(error) == 1 and "no validation-chosen threshold" in error[0] and "--threshold NUMBER" in error[0]
    )
