"""Training step (forward + backward + AdamW) of the fused model against the reference, eager and under
``torch.compile``, side by side: atto and tiny, B=32 and B=128, T=256, train mode (drop path on).

    pytest benchmarks/bench_training.py --benchmark-only --benchmark-json=train.json
    python -m benchmarks.bench_training atto 32 [rounds] [impl,impl..] [threads]
        # round-robin timer: one step of every peer per round, so load swings hit all of them alike; also
        # reports CPU time per step, which with threads=1 is robust to a machine busy with other processes
        # (wall time then mostly measures the scheduler)
"""

from __future__ import annotations

import sys
import time

import pytest
import torch

import convnext_fast
from benchmarks.conftest import C_IN, THREADS, T, reference_model

# eager / compile: the reference with torch's default AdamW, as a user of the reference would write it;
# eager-fused-adamw: the same with torch's fused AdamW, to separate the optimizer's share; fused: our model
# with the trainer's optimizer (train.optim.build_optimizer, fused AdamW).
TRAIN_IMPLS = ("eager", "eager-fused-adamw", "compile", "fused", "fused-composition")
ROUNDS = {32: 8, 128: 3}
DROP_PATH = 0.1


def train_step_fn(impl: str, variant: str, batch: int):
    """A zero-argument callable running one AdamW training step of ``impl`` (weights as the benchmarks'
    reference model, drop path 0.1, cross-entropy on 3 classes)."""
    from convnext_fast.ops import _cpu_common
    from convnext_fast.train.optim import build_optimizer

    config = dict(reference_model(variant).config, drop_path_rate=DROP_PATH)
    if impl.startswith("fused"):
        model = convnext_fast.ConvNeXt1d(**config)
    else:
        model = type(reference_model(variant))(**config)
    model.load_state_dict(reference_model(variant).state_dict())
    model.train()
    if impl.startswith("fused"):
        opt = build_optimizer(model, lr=1e-4, weight_decay=0.01)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=impl == "eager-fused-adamw" or None)
    forward = torch.compile(model) if impl == "compile" else model
    gen = torch.Generator().manual_seed(batch)
    x, y = torch.randn(batch, C_IN, T, generator=gen), torch.randint(0, 3, (batch,), generator=gen)
    composition = impl == "fused-composition"

    def step():
        # the composition switch is module state: set it per step so interleaved peers do not leak into each other
        _cpu_common.TRAIN_COMPOSITION = composition
        try:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(forward(x), y).backward()
            opt.step()
        finally:
            _cpu_common.TRAIN_COMPOSITION = False

    return step


@pytest.mark.parametrize("impl", TRAIN_IMPLS)
@pytest.mark.parametrize("batch", [32, 128])
@pytest.mark.parametrize("variant", ["atto", "tiny"])
def test_train_step(benchmark, variant, batch, impl):
    benchmark.group = f"train step {variant} B={batch}"
    step = train_step_fn(impl, variant, batch)
    step()  # compile / first-touch outside the timing
    benchmark.pedantic(step, rounds=ROUNDS[batch], iterations=1, warmup_rounds=1)


def round_robin(
    variant: str, batch: int, rounds: int, impls=TRAIN_IMPLS, threads: int = THREADS
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall times, process CPU times) per impl, one step of each impl per round."""
    from convnext_fast._ext import _C

    torch.set_num_threads(threads)
    if _C is not None:
        _C.set_num_threads(threads)
    steps = {impl: train_step_fn(impl, variant, batch) for impl in impls}
    for step in steps.values():
        step()
        step()
    wall: dict[str, list[float]] = {impl: [] for impl in impls}
    cpu: dict[str, list[float]] = {impl: [] for impl in impls}
    for _ in range(rounds):
        for impl, step in steps.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            wall[impl].append(time.perf_counter() - start)
            cpu[impl].append(time.process_time() - start_cpu)
    return wall, cpu


if __name__ == "__main__":
    variant, batch = sys.argv[1], int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    impls = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else TRAIN_IMPLS
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else THREADS
    for label, result in zip(
        ("wall", "cpu"), round_robin(variant, batch, rounds, impls, threads), strict=True
    ):
        best = min(min(v) for v in result.values())
        for impl, ts in result.items():
            ts = sorted(ts)
            print(
                f"{variant} B={batch} threads={threads} {label:4s} {impl:18s} min {ts[0] * 1e3:8.2f} ms  "
                f"median {ts[len(ts) // 2] * 1e3:8.2f} ms  min/best {ts[0] / best:.2f}"
            )
