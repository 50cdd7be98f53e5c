"""The per-test seed must be reproducible from the printed run seed, in a fresh process, and the override
must be the one the README documents."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import PROJECT_ROOT
from tests.seeds import RUN_SEED, SEED_ENV, seed_of


def _in_fresh_process(code: str, env_seed: str, cwd) -> str:
    env = {**os.environ, SEED_ENV: env_seed, "PYTHONHASHSEED": "random"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=cwd
    )
    return out.stdout


def test_seed_of_a_test_is_the_same_in_another_process(request):
    code = f"from tests.seeds import seed_of; print(seed_of({request.node.nodeid!r}))"
    out = _in_fresh_process(code, str(RUN_SEED), request.config.rootpath)
    assert int(out) == seed_of(request.node.nodeid)


def test_the_environment_variable_pins_the_run_seed(request):
    code = "from tests.seeds import RUN_SEED, seed_of; print(RUN_SEED, seed_of('t'))"
    pinned = RUN_SEED + 1
    run_seed, test_seed = map(int, _in_fresh_process(code, str(pinned), request.config.rootpath).split())
    assert run_seed == pinned and test_seed != seed_of("t")


def test_this_process_publishes_its_run_seed_to_workers_and_subprocesses():
    # pytest-xdist workers inherit the controller's environment: they must draw the same run seed.
    assert os.environ[SEED_ENV] == str(RUN_SEED)


def test_different_tests_get_different_seeds():
    seeds = {seed_of(f"tests/test_x.py::test_{i}") for i in range(200)}
    assert len(seeds) == 200


def test_the_override_is_documented():
    assert SEED_ENV in (PROJECT_ROOT / "README.md").read_text()
