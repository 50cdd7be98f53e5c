"""What a training run reports while it runs: a transient per-batch bar (only on a terminal), one plain
line per epoch on stderr that stays (terminal or log) with the time per epoch and an ETA, one JSON line per
epoch in ``metrics.jsonl`` (always) and TensorBoard scalars (when asked for and installed)."""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .records import append_jsonl


def progress_enabled(requested: bool | None) -> bool:
    """Bars by default only when stderr is a terminal, so logs and CI output stay clean."""
    return sys.stderr.isatty() if requested is None else bool(requested)


def batch_bar(total: int, desc: str, enabled: bool):
    # Transient: the epoch's summary line (EpochLog) is what stays on screen once the epoch ends.
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=not enabled, dynamic_ncols=True)


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h07m``: short enough for a per-epoch line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Eta:
    """Remaining time of a run of ``folds`` × ``epochs`` epochs from the mean wall time per epoch so far
    (validation and checkpointing included). An upper bound: early stopping can end a fold sooner."""

    def __init__(self, folds: int, epochs: int, clock=time.monotonic):
        self.folds, self.epochs, self.clock = folds, epochs, clock
        self.started = clock()
        self.done = 0  # epochs finished in this process (a resumed run counts from its restart)
        self.folds_done = 0  # folds finished (or skipped as already done) in this process

    def fold_finished(self) -> None:
        self.folds_done += 1

    def epoch_finished(self) -> None:
        self.done += 1

    def seconds_per_epoch(self) -> float:
        return (self.clock() - self.started) / self.done if self.done else float("nan")

    def remaining_s(self, epoch: int) -> float:
        """Seconds left after ``epoch`` (1-based) of the current fold."""
        left = (self.epochs - epoch) + max(self.folds - self.folds_done - 1, 0) * self.epochs
        return left * self.seconds_per_epoch()


class EpochLog:
    """Appends each epoch's record to ``metrics.jsonl`` and mirrors the numbers to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, echo: bool = False, eta: Eta | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.echo = echo  # one line per epoch on stderr: it stays on a terminal and reads well in a log
        self.eta = eta
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:
                warnings.warn(
                    "--tensorboard: the tensorboard package is not installed; skipping it", stacklevel=2
                )

    def write(self, record: dict) -> None:
        append_jsonl(self.path, record)
        if self.eta is not None:
            self.eta.epoch_finished()
        if self.echo:
            print(self.line(record), file=sys.stderr, flush=True)
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"fold{record['fold']}/{key}", value, record["epoch"])

    def line(self, record: dict) -> str:
        """``fold 0 epoch 3/100: train_loss=… val_loss=… | 12s/epoch, ETA ≤ 19m36s``."""
        numbers = " ".join(
            f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float) and k != "epoch_s"
        )
        epochs = f"/{self.eta.epochs}" if self.eta else ""
        text = f"fold {record['fold']} epoch {record['epoch']}{epochs}: {numbers}"
        if self.eta is not None:
            per = self.eta.seconds_per_epoch()
            text += f" | {format_duration(per)}/epoch, ETA ≤ {format_duration(self.eta.remaining_s(record['epoch']))}"
        return text

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
