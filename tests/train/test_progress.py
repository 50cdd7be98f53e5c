"""Per-epoch lines: they carry the time per epoch and an ETA for the rest of the run."""

from __future__ import annotations

import json

import pytest

from convnext_fast.train.progress import EpochLog, Eta, format_duration


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.4, "59s"), (185, "3m05s"), (7620, "2h07m")])
def test_durations_read_short(seconds, text):
    assert format_duration(seconds) == text


def test_eta_counts_the_epochs_left_in_this_fold_and_the_folds_after_it(tmp_path, capsys):
    clock = FakeClock()
    eta = Eta(folds=2, epochs=10, clock=clock)
    log = EpochLog(tmp_path, echo=True, eta=eta)
    for epoch in (1, 2):
        clock.now += 5.0  # 5 s per epoch, validation included
        log.write({"fold": 0, "epoch": epoch, "train_loss": 1.0, "val_loss": 1.1, "epoch_s": 4.0})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1].startswith("fold 0 epoch 2/10: train_loss=1 val_loss=1.1 | 5s/epoch")
    assert lines[1].endswith("ETA ≤ 1m30s")  # (8 left in fold 0 + 10 in fold 1) × 5 s
    eta.fold_finished()  # fold 0 stopped early after 2 epochs
    clock.now += 5.0
    log.write({"fold": 1, "epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "epoch_s": 4.0})
    assert capsys.readouterr().err.strip().endswith("ETA ≤ 45s")  # 9 epochs left, still 5 s each
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["epoch"] == 1
