"""Per-test seeds, kept free of heavy imports so that another process can recompute one in a blink.

A fresh run seed per run (``CONVNEXT_FAST_TEST_SEED`` pins one to reproduce a failure); each test's seed is
the run seed plus a stable hash of its node id. (``hash()`` is salted per process, so a seed built from it
could not be reproduced from the printed run seed.)"""

from __future__ import annotations

import os
import random
import zlib

SEED_ENV = "CONVNEXT_FAST_TEST_SEED"
RUN_SEED = int(os.environ.get(SEED_ENV, random.SystemRandom().randrange(2**31)))
# pytest-xdist workers (and test subprocesses) inherit the environment: one run, one seed everywhere, so the
# seed the controller prints reproduces what every worker drew.
os.environ[SEED_ENV] = str(RUN_SEED)


def seed_of(nodeid: str) -> int:
    """The seed of one test, from the run seed and the test's node id."""
    return (RUN_SEED + zlib.crc32(nodeid.encode())) % 2**31
