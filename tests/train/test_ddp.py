"""DistributedDataParallel over two CPU processes (gloo), launched the way users launch it: torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

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
@pytest.mark.slow
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


def _fused_ddp_step(rank: int, world: int, init: str, batch: dict, out: str) -> None:
    """One rank: the fused model (C++ CPU kernels) wrapped in DDP, one SGD step on its shard of the batch."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = _fused_model(batch["seed"])
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, weight_decay=0.05)
        shard = slice(rank * len(batch["y"]) // world, (rank + 1) * len(batch["y"]) // world)
        loss = torch.nn.functional.cross_entropy(ddp(batch["x"][shard]), batch["y"][shard])
        loss.backward()  # DDP averages the gradients over the ranks here
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
        torch.save({"grads": grads, "params": dict(model.named_parameters())}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _fused_model(seed: int):
    from convnext_fast import ConvNeXt1d

    torch.manual_seed(seed)
    # No drop path (random per process); a large layer scale so every block's weights get real gradients.
    return ConvNeXt1d(in_chans=5, dims=(8, 16, 24, 32), depths=(1, 2, 1, 1), drop_path_rate=0.0,
                      layer_scale_init=0.5, backend="cpu")  # fmt: skip


@pytest.mark.timeout(120)
def test_fused_model_under_ddp_matches_one_process_on_the_whole_batch(tmp_path, rng):
    """Two gloo ranks on half a batch each give the full-batch gradient and the same AdamW step as one
    process (the fused kernels' backward is what DDP all-reduces), and both ranks end with equal weights."""
    import torch.multiprocessing as mp

    import convnext_fast

    assert convnext_fast.backends()["cpu"] == "live", "the C++ extension must be built for this test"
    n, t = 2 * int(rng.integers(2, 5)), 32 * int(rng.integers(2, 4))
    batch = {
        "x": torch.from_numpy(rng.standard_normal((n, 5, t)).astype("float32")),
        "y": torch.from_numpy(rng.integers(0, 3, n)),
        "seed": int(rng.integers(2**31)),
    }
    # spawn, not fork: a forked rank inherits the parent's OpenMP state but not its thread pool, and the
    # C++ kernels' first parallel region then hangs (seen in CI when an earlier test in the same xdist
    # worker had run the kernels). Spawned ranks import torch and the extension afresh (~10 s).
    args = (2, f"file://{tmp_path / 'rendezvous'}", batch, str(tmp_path))
    mp.start_processes(_fused_ddp_step, args=args, nprocs=2, start_method="spawn")

    model = _fused_model(batch["seed"])
    # SGD: the step is linear in the gradient, so equal gradients must give equal weights to rounding.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.05)
    torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"]).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    optimizer.step()
    for rank in range(2):
        ddp = torch.load(tmp_path / f"rank{rank}.pt")
        assert ddp["grads"].keys() == grads.keys()
        for name, g in grads.items():
            assert g.abs().max() > 0, f"{name} got no gradient: the test would prove nothing"
            torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
            torch.testing.assert_close(ddp["params"][name], model.get_parameter(name), rtol=1e-4, atol=1e-6)
