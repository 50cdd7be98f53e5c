"""What a training run reports while it runs: a progress bar (only on a terminal), one JSON line per
epoch (always) and TensorBoard scalars (when asked for and installed)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from tqdm.auto import tqdm

from .records import append_jsonl


def progress_enabled(requested: bool | None) -> bool:
    """Bars by default only when stderr is a terminal, so logs and CI output stay clean."""
    return sys.stderr.isatty() if requested is None else bool(requested)


def batch_bar(total: int, desc: str, enabled: bool):
    return tqdm(total=total, desc=desc, unit="batch", leave=False, disable=not enabled, dynamic_ncols=True)


class EpochLog:
    """Appends each epoch's record to ``metrics.jsonl`` and mirrors the numbers to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, echo: bool = False):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.echo = echo  # one line per epoch on stderr, for runs without progress bars (logs, CI)
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
        if self.echo:
            numbers = " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float))
            print(f"fold {record['fold']} epoch {record['epoch']}: {numbers}", file=sys.stderr, flush=True)
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(f"fold{record['fold']}/{key}", value, record["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
