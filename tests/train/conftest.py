"""Fixtures for the trainer tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared, oversubscribed CPU two OpenMP
    threads spin-wait on each other (measured: 30 ms vs 1.1 s per tiny training step)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
