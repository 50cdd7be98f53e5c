"""The window ring buffer, the latency summary and the resume file."""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.errors import UserError
from convnext_fast.live.latency import LatencyStats
from convnext_fast.live.ring import WindowRing
from convnext_fast.live.state import LiveStore, load_state


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


def test_latency_memory_is_bounded(rng):
    stats = LatencyStats(keep=100)
    samples = rng.exponential(100.0, size=1000)
    for s in samples:
        stats.add("model", s)
    row = stats.summary()["model"]
    assert row["n"] == 1000 and row["max"] == pytest.approx(samples.max())
    assert row["p50"] == pytest.approx(np.percentile(samples[-100:], 50))  # the newest 100 only
    assert stats._ring["model"].size == 100


def test_ring_state_round_trip(rng):
    for pushes in (0, 3, 7, 19):
        ring = WindowRing(3, 7)
        for _ in range(pushes):
            ring.push(rng.standard_normal(3).astype(np.float32))
        copy = WindowRing(3, 7)
        copy.set_state(ring.get_state())
        assert copy.count == ring.count
        if ring.full:
            np.testing.assert_array_equal(copy.view(), ring.view())


def test_state_round_trip_and_bad_files(tmp_path, rng):
    identity = {"source": "replay", "symbol": "BTCUSDT", "interval": "60", "model": "m", "dataset": "d"}
    store = LiveStore(tmp_path / "s" / "state.db")
    store.start_new(identity)
    t = int(rng.integers(1e12))
    snapshot = {
        "last_start_ms": t,
        "bars_processed": 17,
        "broker": {"equity": float(rng.random())},
        "scalars": {"finite_run": 3},
        "features": rng.random(5).tobytes(),
        "ring": rng.random(4).astype(np.float32).tobytes(),
    }
    store.commit({"start_ms": t, "signal": 1}, snapshot)
    store.close()
    state = load_state(tmp_path / "s" / "state.db")
    assert (state.last_start_ms, state.bars_processed, state.broker) == (t, 17, snapshot["broker"])
    assert state.engine["features"] == snapshot["features"] and state.engine["ring"] == snapshot["ring"]
    store = LiveStore(tmp_path / "s" / "state.db")
    assert store.records_after(None) == [{"start_ms": t, "signal": 1}]
    with pytest.raises(UserError, match="already holds a run"):
        store.start_new(identity)
    with pytest.raises(UserError, match=r"another run \(dataset 'd' ≠ 'e'\); --force overrides"):
        store.check_resume({**identity, "dataset": "e"})
    assert store.check_resume({**identity, "dataset": "e"}, force=True).last_start_ms == t
    with pytest.raises(UserError, match="does not exist"):
        load_state(tmp_path / "missing.db")
    (tmp_path / "bad.db").write_text("{not a database" * 100)
    with pytest.raises(UserError, match="not a live state database"):
        load_state(tmp_path / "bad.db")
