"""The inner loops: one training epoch and batched inference. No fold or file logic lives here."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .choices import PRECISIONS  # defined torch-free for the command line
from .progress import batch_bar


def autocast_context(precision: str, device: torch.device):
    """bf16 autocast on CPU or GPU; fp16 autocast only on GPU (it needs the gradient scaler)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        if device.type != "cuda":
            raise UserError("--precision fp16 needs a CUDA device; use bf16 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    raise UserError(f"--precision must be one of {PRECISIONS}, got {precision!r}")


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


@dataclass
class EpochStats:
    loss: float  # mean over this process's samples
    samples: int
    seconds: float
    steps: int


def train_epoch(
    model: nn.Module,
    loader,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    lr_at,
    first_step: int,
    device: torch.device,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = 1.0,
    ema=None,
    augment=None,
    progress: bool = False,
    desc: str = "train",
) -> EpochStats:
    """One pass over ``loader``; the learning rate is set per step from ``lr_at(step)``."""
    model.train()
    total, samples, step = 0.0, 0, first_step
    start = time.perf_counter()
    with batch_bar(len(loader), desc, progress) as bar:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            lr = lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast_context(precision, device):
                out = model(x)
            loss = criterion(out.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update_parameters(getattr(model, "module", model))  # unwrap DDP
            total += loss.item() * len(y)
            samples += len(y)
            step += 1
            rate = samples / (time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{total / samples:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.0f}", refresh=False
            )
            bar.update()
    seconds = time.perf_counter() - start
    return EpochStats(loss=total / max(samples, 1), samples=samples, seconds=seconds, steps=step - first_step)


@torch.no_grad()
def predict(
    model: nn.Module, loader, device: torch.device, precision: str = "fp32"
) -> tuple[np.ndarray, np.ndarray]:
    """Model outputs (float32 ``[N, out]``) and targets for every batch of ``loader``, in order."""
    model.eval()
    outputs, targets = [], []
    for x, y in loader:
        with autocast_context(precision, device):
            out = model(x.to(device))
        outputs.append(out.float().cpu())
        targets.append(y)
    if not outputs:  # a process's validation shard can be empty when there are fewer windows than processes
        return np.empty((0, 0), dtype=np.float32), np.empty(0)
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()
