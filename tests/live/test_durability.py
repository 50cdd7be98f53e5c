"""Durable every candle: ``kill -9`` at random points, then ``--resume``, processes every candle exactly once
with equity continuous and decisions equal to the full-series backtest; a resume refuses a state written by
another run (source kind, symbol, interval, checkpoint, dataset) unless ``--force``; ``--out`` is repaired
(torn last line, lines missing after a crash) so it holds every candle once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convnext_fast.cli import main
from convnext_fast.trading.backtest import BacktestConfig, run_backtest
from tests.child_env import child_env

from .support import HISTORY, market, tiny_checkpoint, write_csv
from .test_parity import FIRST, LIVE, backtest_decisions, compare, gap_threshold, parity_series


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# The killer: imports the library once, then forks one child per run (a fresh interpreter per run costs
# 3-20 s of imports on a loaded 2-core box, 20 of them far too long for the suite) and kills it with
# SIGKILL at a random point once it has made progress. The parent never runs a model, so no OpenMP team
# exists at fork time.
_KILLER = r"""
import json, os, random, signal, sys, time
args = json.loads(sys.argv[1])
from convnext_fast.cli import main
from convnext_fast.live.state import LiveStore
import convnext_fast.features.pipeline as fp, numpy as np
# Everything a run imports, imported once for all children (torch._dynamo alone takes seconds).
import convnext_fast.train, convnext_fast.live.session, convnext_fast.live.sources, convnext_fast.inference
import convnext_fast.train.inputs, convnext_fast.trading.cli, convnext_fast.data.bybit, convnext_fast.data.store
# The replayed CSV's reader, and pandas, which pyarrow imports on its first numpy conversion when it is
# installed (as in the test extra): together most of a run's start (~1 s).
import pandas, pyarrow.compute, pyarrow.csv
fp.StreamingFeatures().update(1.0, 1.0, 1.0, 1.0, 1.0)  # numba's cached code, loaded once for all children
random.seed(args["seed"])
out = args["out"]

def committed():
    if not os.path.exists(args["state"]):
        return False
    store = LiveStore(args["state"], "os")
    try:
        return store.load() is not None
    finally:
        store.close()

def candles_written():
    try:
        with open(out, "rb") as f:
            return f.read().count(b'"event":"candle"')
    except FileNotFoundError:
        return 0

def run(extra):
    argv = args["argv"] + (["--resume"] if committed() else []) + extra
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        os._exit(main(argv))
    return pid

for kill in range(args["kills"]):
    seen = candles_written()
    pid = run(["--speed", "1.2e6"])  # paced (about 3 ms a candle) so the kill lands mid-stream
    deadline = time.monotonic() + 120
    while candles_written() <= seen and time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0]:
            sys.exit(f"run {kill} ended before its kill")
        time.sleep(0.002)
    time.sleep(random.uniform(0.0, 0.1))  # a random point: features, model, commit or the write
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
pid = run([])
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_twenty_times_then_resume_processes_every_candle_once(tmp_path, rng):
    candles = parity_series(rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles)
    probs, score = backtest_decisions(ckpt, candles)
    tau = gap_threshold(score[FIRST:])
    out, state = tmp_path / "live.jsonl", tmp_path / "state.db"
    argv = [
        "live", "--source", "replay", "--data", str(csv), "--checkpoint", str(ckpt), "--threshold", repr(tau),
        "--start", str(int(candles.start_ms[FIRST])), "--out", str(out), "--state", str(state),
        "--durability", "os", "--heartbeat-s", "0",
    ]  # fmt: skip
    spec = {
        "argv": argv,
        "out": str(out),
        "state": str(state),
        "kills": 20,
        "seed": int(rng.integers(1 << 30)),
    }
    env = child_env()
    done = subprocess.run(
        [sys.executable, "-c", _KILLER, json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    records = _lines(out)
    assert sum(r["event"] == "start" for r in records) == 21
    figures = compare(records, candles, probs, tau)  # every live bar exactly once, decisions = backtest
    assert figures["bars"] == LIVE
    bars = [r for r in records if r["event"] == "candle"]
    # Equity continuous: the paper broker of 21 processes fills exactly as one backtest of the same decisions.
    live = candles[FIRST:]
    bt = run_backtest(
        live.open, live.high, live.low, live.close,
        np.array([r["signal"] for r in bars]), np.array([r["size"] for r in bars]), BacktestConfig(),
    )  # fmt: skip
    np.testing.assert_allclose([r["equity"] for r in bars][:-1], bt.equity[:-1], rtol=1e-12)
    assert any(r["position"] != 0 for r in bars)
    print("kill -9 x20 + resume parity:", figures)


def _run(tmp_path, *extra, data=None, ckpt=None):
    argv = ["live", "--window", "64", "--threshold", "0.34", "--state", str(tmp_path / "s.db")]
    if data is not None:
        argv += ["--data", str(data)]
    if ckpt is not None:
        argv += ["--checkpoint", str(ckpt)]
    return main([*argv, *extra])


def test_resume_refuses_another_run_unless_forced(tmp_path, rng, capsys):
    candles = market(HISTORY + 60, rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    other_csv = write_csv(tmp_path / "d.csv", market(HISTORY + 60, rng))
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles)
    other_ckpt = tiny_checkpoint(tmp_path / "n.safetensors", rng, candles)
    offline = ["--base-url", "http://127.0.0.1:9"]
    assert _run(tmp_path, "--max-bars", "5", data=csv, ckpt=ckpt) == 0
    capsys.readouterr()
    cases = [
        (dict(data=csv, ckpt=other_ckpt), "model"),
        (dict(data=other_csv, ckpt=ckpt), "dataset"),
        (dict(data=csv, ckpt=ckpt, extra=("--symbol", "ETHUSDT")), "symbol"),
        (dict(data=csv, ckpt=ckpt, extra=("--interval", "15")), "interval"),
        (dict(ckpt=ckpt, extra=("--source", "synthetic", *offline)), "source"),
    ]
    for kw, key in cases:
        assert _run(tmp_path, "--resume", *kw.get("extra", ()), data=kw.get("data"), ckpt=kw.get("ckpt")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another run" in err[0] and f"{key} " in err[0], err
    # a fresh run must not silently overwrite a position either
    assert _run(tmp_path, "--max-bars", "2", data=csv, ckpt=ckpt) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _run(tmp_path, "--resume", "--force", "--max-bars", "2", data=csv, ckpt=other_ckpt) == 0


def test_out_file_is_repaired_on_resume(tmp_path, rng):
    candles = market(HISTORY + 80, rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles)
    out = tmp_path / "live.jsonl"
    assert _run(tmp_path, "--max-bars", "30", "--out", str(out), data=csv, ckpt=ckpt) == 0
    reference = [r for r in _lines(out) if r["event"] == "candle"]
    # A crash between commit and write loses the newest lines; one mid-write leaves a torn line.
    lines = out.read_text().splitlines(keepends=True)
    candle_idx = [i for i, line in enumerate(lines) if '"event":"candle"' in line]
    cut = candle_idx[-4]
    out.write_text("".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    assert _run(tmp_path, "--resume", "--out", str(out), data=csv, ckpt=ckpt) == 0
    records = _lines(out)  # parses: no torn line left
    bars = [r for r in records if r["event"] == "candle"]
    starts = [r["start_ms"] for r in bars]
    assert starts == sorted(set(starts)), "a candle twice or out of order"
    assert starts[0] == reference[0]["start_ms"] and starts[-1] == int(candles.start_ms[-1])
    assert len(bars) == len(candles) - int(np.searchsorted(candles.start_ms, starts[0]))
    for a, b in zip(bars[:30], reference, strict=True):
        assert (a["start_ms"], a["signal"], a["equity"]) == (b["start_ms"], b["signal"], b["equity"])
