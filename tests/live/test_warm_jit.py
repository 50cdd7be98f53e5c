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


# A resumed run restores the streaming features' state instead of seeding them from history, so nothing
# compiled their per-bar step before the first candle unless warm_jit did.
RESUME_SCRIPT = textwrap.dedent(
    """
    import asyncio, io, pickle, sys
    import numpy as np
    from convnext_fast.features import pipeline
    from convnext_fast.live.loop import LiveContext, OutputSink, run_live
    from tests.live.support import HOUR_MS, make_engine, model_and_norm

    with open(sys.argv[1], "rb") as f:
        saved = pickle.load(f)
    engine = make_engine(*model_and_norm(np.random.default_rng(0)))
    engine.restore(saved["engine"], saved["last_start_ms"], saved["bars"])
    assert not pipeline._stream_bar.signatures, "nothing ran the streaming step yet"
    seen = []

    async def source():
        for c in saved["stream"]:
            seen.append(len(pipeline._stream_bar.signatures))
            yield c

    asyncio.run(run_live(engine, source(), LiveContext("X", "60", HOUR_MS), OutputSink(io.StringIO())))
    print("features compiled before candles:", seen, "features after:", engine.features.n_bars)
    assert seen and seen[0] > 0, seen
    """
)


def test_a_resumed_run_compiles_the_streaming_features_before_the_first_candle(rng, tmp_path):
    import pickle

    from tests.live.support import seeded

    _, engine, stream = seeded(rng, 3)
    bars_before = engine.features.n_bars
    state = tmp_path / "saved.pkl"
    state.write_bytes(
        pickle.dumps(
            {
                "engine": engine.snapshot(),
                "last_start_ms": engine.last_start_ms,
                "bars": 0,
                "stream": list(stream),
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(state)],
        cwd=ROOT,
        env=child_env(tests=True),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # warming must not consume a bar: the restored features advance by exactly the streamed candles
    assert f"features after: {bars_before + len(stream)}" in done.stdout, done.stdout
