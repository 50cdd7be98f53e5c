"""DistributedDataParallel over two CPU processes (gloo), launched the way users launch it: torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.train import TrainConfig, train

from .tiny_run import TINY, TINY_ARGS, write_candles_csv

RUN_ARGS = ["--epochs", "2", "--warmup-epochs", "1", "--folds", "2", "--horizon", "4", "--model", "reference"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shape_of(obj):
    """The structure of a results document: keys and list lengths, not the numbers."""
    if isinstance(obj, dict):
        return {k: shape_of(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [shape_of(v) for v in obj]
    return type(obj).__name__ if obj is not None else "null"


@pytest.mark.timeout(120)
def test_torchrun_two_cpu_processes_train_and_report_like_one(tmp_path, rng):
    candles = synthetic_candles(2400, seed=int(rng.integers(2**31)))
    csv = tmp_path / "candles.csv"
    write_candles_csv(candles, csv)
    seed = str(int(rng.integers(1000)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "convnext_fast.train", "--data", str(csv), *TINY_ARGS, *RUN_ARGS,
           "--seed", seed, "--device", "cpu", "--num-threads", "1", "--out", str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| pooled |") == 3, "only the main process prints the results table"
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2

    run = {
        "epochs": 2,
        "warmup_epochs": 1,
        "folds": 2,
        "label": {"horizon": 4},
        "fused": False,
        "device": "cpu",
    }
    single = train(TrainConfig(data=str(csv), out=str(tmp_path / "one"), seed=int(seed), **TINY, **run))
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert shape_of(ddp) == shape_of(one)
    for a, b in zip(ddp["folds"], one["folds"], strict=True):
        assert a["n_windows"] == b["n_windows"] and a["ranges"] == b["ranges"], "same folds, same test bars"
        assert a["test"]["baselines"] == b["test"]["baselines"], "baselines do not depend on the model"
    assert single.pooled["model"]["n"] == ddp["pooled"]["model"]["n"]
    # One JSON line per epoch and fold, written once (by the main process), not once per process.
    log = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 1, 2]
