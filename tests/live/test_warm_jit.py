"""The broker's jitted step is compiled before the first live candle, not on it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.child_env import child_env

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: earlier tests in this process have long compiled the step function.
SCRIPT = textwrap.dedent(
    """
    import asyncio, io
    import numpy as np
    from convnext_fast.live.loop import LiveContext, OutputSink, run_live
    from convnext_fast.trading import _engine
    from tests.live.support import HOUR_MS, seeded

    candles, engine, stream = seeded(np.random.default_rng(SEED), 3)
    assert not _engine.step.signatures, "nothing ran the step yet"
    seen = []

    async def source():
        for c in stream:
            seen.append(len(_engine.step.signatures))  # compiled when the first candle arrives?
            yield c

    asyncio.run(run_live(engine, source(), LiveContext("X", "60", HOUR_MS), OutputSink(io.StringIO())))
    print("compiled before candles:", seen)
    assert seen and seen[0] > 0, seen
    """
)


def test_broker_step_is_compiled_before_the_first_candle(rng):
    env = child_env(tests=True)
    code = SCRIPT.replace("SEED", str(int(rng.integers(2**31))))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "compiled before candles: [1, " in done.stdout
