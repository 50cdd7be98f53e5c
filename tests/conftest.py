"""Shared fixtures. Every test gets fresh random inputs: the seed is drawn per run and printed on failure."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

# Without a GPU the Triton kernels run in the interpreter. @triton.jit decides at decoration time, and
# torch._dynamo imports triton early in a whole-suite run, so the variable must be set before torch loads.
# (Checking the device nodes avoids importing torch to ask torch.cuda.)
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

from convnext_fast.data.ratelimit import STATE_DIR_ENV
from tests.seeds import RUN_SEED, SEED_ENV, seed_of

# The Bybit rate-limit schedule is machine-wide on purpose (one IP), but a test run must not queue behind
# other runs on the machine: one folder per run (pytest-xdist workers inherit it and share it).
os.environ.setdefault(STATE_DIR_ENV, tempfile.mkdtemp(prefix="convnext_fast_test_state_"))

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
BTC_CSV = SHARED_DATA / "bybit_btcusdt_60.csv"


def pytest_report_header(config):
    return f"convnext_fast test seed: {RUN_SEED} (set {SEED_ENV}={RUN_SEED} to reproduce)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test says which seeds reproduce it."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(
            (
                "seed",
                f"run seed {RUN_SEED} ({SEED_ENV}={RUN_SEED}); test seed {seed_of(item.nodeid)}",
            )
        )


@pytest.fixture(autouse=True)
def _seed_everything(request):
    """Seed torch/numpy/random per test from the run seed and the test's id, so each test sees different,
    reproducible random data."""
    seed = seed_of(request.node.nodeid)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- code under test may draw from the global generator
    random.seed(seed)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(seed_of(request.node.nodeid))


@pytest.fixture
def btc_csv() -> Path:
    """The real Bybit BTCUSDT 1h candles from ../shared/data; the test skips when they are absent."""
    if not BTC_CSV.is_file():
        pytest.skip(f"real market data not found at {BTC_CSV}")
    return BTC_CSV
