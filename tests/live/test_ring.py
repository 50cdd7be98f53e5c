"""The window ring buffer, the latency summary and the resume file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnext_fast.errors import UserError
from convnext_fast.live.latency import LatencyStats
from convnext_fast.live.ring import WindowRing
from convnext_fast.live.state import LiveState, load_state, save_state


@pytest.mark.parametrize(("channels", "window"), [(1, 1), (3, 7), (20, 64)])
def test_ring_view_equals_the_newest_columns(rng, channels, window):
    ring = WindowRing(channels, window)
    columns = rng.standard_normal((channels, 3 * window + 5)).astype(np.float32)
    out = np.empty((1, channels, window), dtype=np.float32)
    for t in range(columns.shape[1]):
        ring.push(columns[:, t])
        assert ring.full == (t + 1 >= window)
        if ring.full:
            np.testing.assert_array_equal(ring.view(), columns[:, t + 1 - window : t + 1])
            np.testing.assert_array_equal(ring.batch_into(out)[0], columns[:, t + 1 - window : t + 1])


def test_ring_errors_name_the_problem():
    ring = WindowRing(2, 4)
    with pytest.raises(RuntimeError, match="holds 0 of 4"):
        ring.view()
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ring.push(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="window"):
        WindowRing(2, 0)
    with pytest.raises(ValueError, match="n_channels"):
        WindowRing(0, 4)


def test_latency_percentiles(rng):
    stats = LatencyStats()
    samples = rng.exponential(100.0, size=1000)
    for s in samples:
        stats.add_many({"model": s, "total": 2 * s})
    summary = stats.summary()
    assert len(stats) == 1000 and summary["model"]["n"] == 1000
    for q in (50, 90, 99):
        assert summary["model"][f"p{q}"] == pytest.approx(np.percentile(samples, q))
    assert summary["total"]["max"] == pytest.approx(2 * samples.max())
    assert "p99 µs" in stats.table() and "model" in stats.table()


def test_state_round_trip_and_bad_files(tmp_path, rng):
    state = LiveState("BTCUSDT", "60", int(rng.integers(1e12)), {"engine_state": rng.random(3).tolist()}, 17)
    path = save_state(tmp_path / "s" / "state.json", state)
    assert load_state(path) == state
    assert not list(path.parent.glob("*.tmp")), "atomic write leaves no temp file"
    with pytest.raises(UserError, match="does not exist"):
        load_state(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_state(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(UserError, match="unknown format"):
        load_state(tmp_path / "old.json")
