"""``live --start``: a replay trades from the checkpoint's out-of-sample start by default (as ``backtest``
does, every earlier bar seeding the features), and says so when it trades bars the checkpoint was trained
on."""

from __future__ import annotations

import json

import numpy as np

from convnext_fast.cli import main
from convnext_fast.train import load_checkpoint, save_checkpoint

from .support import HISTORY, market, tiny_checkpoint, write_csv


def _iso(ms: int) -> str:
    return str(np.datetime64(int(ms), "ms"))


def test_live_replay_defaults_to_the_out_of_sample_start_and_warns_in_sample(tmp_path, rng, capsys):
    candles = market(HISTORY + 120, rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    plain = tiny_checkpoint(tmp_path / "p.safetensors", rng, candles)
    model, meta = load_checkpoint(plain, fused=False)
    val_end = HISTORY + int(rng.integers(20, 60))
    test_start = val_end + 1
    ranges = {
        "train": [_iso(candles.start_ms[HISTORY]), _iso(candles.start_ms[val_end - 10])],
        "val": [_iso(candles.start_ms[val_end - 9]), _iso(candles.start_ms[val_end])],
        "test": [_iso(candles.start_ms[test_start]), _iso(candles.start_ms[-1])],
    }
    ckpt = save_checkpoint(tmp_path / "m.safetensors", model, meta.replace(ranges=ranges))

    def run(*extra):
        out = tmp_path / "o.jsonl"
        argv = ["live", "--data", str(csv), "--checkpoint", str(ckpt), "--out", str(out), "--force"]
        assert main([*argv, "--state", str(tmp_path / "s.db"), *extra]) == 0
        bars = [r for r in map(json.loads, out.read_text().splitlines()) if r["event"] == "candle"]
        return bars, capsys.readouterr().err

    bars, err = run()
    assert bars[0]["start_ms"] == candles.start_ms[test_start] and len(bars) == len(candles) - test_start
    assert "out-of-sample test range" in err and "in-sample" not in err
    bars, err = run("--start", "all")
    assert bars[0]["start_ms"] == candles.start_ms[HISTORY + 8]  # as soon as the window is full
    assert "in-sample" in err and "trained/selected on bars up to" in err
    late = int(candles.start_ms[test_start + 7])
    bars, err = run("--start", str(late))
    assert bars[0]["start_ms"] == late and "in-sample" not in err
