"""The per-test seed must be reproducible from the printed run seed, in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import RUN_SEED, seed_of


def test_seed_of_a_test_is_the_same_in_another_process(request):
    code = f"from tests.conftest import seed_of; print(seed_of({request.node.nodeid!r}))"
    env = {**os.environ, "CONVNEXT_FAST_TEST_SEED": str(RUN_SEED), "PYTHONHASHSEED": "random"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=request.config.rootpath,
    )
    assert int(out.stdout) == seed_of(request.node.nodeid)


def test_different_tests_get_different_seeds():
    seeds = {seed_of(f"tests/test_x.py::test_{i}") for i in range(200)}
    assert len(seeds) == 200
