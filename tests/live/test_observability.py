"""A process that runs for weeks: heartbeats while the feed is quiet, Prometheus metrics, timestamped log
lines, bounded latency memory (test_ring.py), and the events table the order mirror commits to."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import urllib.request

import pytest

from convnext_fast.cli import main
from convnext_fast.errors import UserError
from convnext_fast.live.loop import LiveContext, OutputSink, run_live
from convnext_fast.live.metrics import LiveMetrics
from convnext_fast.live.sources import replay
from convnext_fast.live.state import LiveStore

from .support import HISTORY, HOUR_MS, make_engine, market, model_and_norm, tiny_checkpoint, write_csv


def test_heartbeats_while_the_feed_is_quiet_and_events_are_committed(rng, tmp_path):
    candles = market(HISTORY + 6, rng)
    engine = make_engine(*model_and_norm(rng))
    engine.warm_up(candles[:HISTORY])
    store = LiveStore(tmp_path / "s.db", "os")
    store.start_new({"source": "replay"})

    async def slow_feed():
        async for c in replay(candles[HISTORY:], interval_ms=HOUR_MS):
            yield c
            await asyncio.sleep(0.25)  # a quiet market between candles

    def hook(eng):
        return [("order", {"signal": int(eng.broker.pending_signal)})]

    out = io.StringIO()
    ctx = LiveContext("BTCUSDT", "60", HOUR_MS, store=store, heartbeat_s=0.1, after_candle=hook)
    asyncio.run(run_live(engine, slow_feed(), ctx, OutputSink(out)))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds.count("candle") == 6 and kinds.count("heartbeat") >= 6
    beat = next(r for r in records if r["event"] == "heartbeat")
    assert beat["wall"].endswith("Z") and "processed" in beat and "equity" in beat
    events = store.events("order")
    assert [t for t, _, _ in events] == candles.start_ms[HISTORY:].tolist()
    store.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prometheus_endpoint_exposes_the_loop(rng, tmp_path):
    pytest.importorskip("prometheus_client")
    candles = market(HISTORY + 40, rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles)
    port = _free_port()
    argv = ["live", "--data", str(csv), "--checkpoint", str(ckpt), "--state", str(tmp_path / "s.db")]
    assert main([*argv, "--metrics-port", str(port), "--durability", "os"]) == 0
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in (
        "convnext_live_candles_total",
        "convnext_live_feed_lag_seconds",
        "convnext_live_reconnects_total",
        "convnext_live_rejected_total",
        "convnext_live_decision_latency_us_bucket",
        "convnext_live_position",
        "convnext_live_equity",
    ):
        assert name in text, name
    processed = [line for line in text.splitlines() if line.startswith("convnext_live_candles_total")]
    assert processed and float(processed[0].split()[-1]) > 0


def test_metrics_without_prometheus_client_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(UserError, match=r"pip install 'convnext-fast\[live\]'"):
        LiveMetrics().serve(0, {})


def test_log_lines_carry_utc_timestamps(rng, tmp_path, capsys):
    candles = market(HISTORY + 20, rng)
    csv = write_csv(tmp_path / "c.csv", candles)
    lines = csv.read_text().splitlines()
    fields = lines[-5].split(",")
    fields[2] = repr(float(fields[2]) * 10)  # a high 10x the close: rejected by --max-jump, logged
    lines[-5] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    assert main(["live", "--data", str(csv), "--window", "64", "--state", str(tmp_path / "s.db")]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert err and all(
        line[:4].isdigit() and line[10] == "T" and line.split()[0].endswith("Z") for line in err
    )
    assert any("--max-jump" in line for line in err)


def test_stream_counters_fold_into_the_metrics():
    from convnext_fast.data.bybit_ws import StreamStats

    metrics = LiveMetrics()
    metrics.stream_stats = stats = StreamStats()
    stats.rejected_frames, stats.reconnects = 3, 1
    assert metrics.as_dict()["rejected"] == 3 and metrics.as_dict()["reconnects"] == 1
    stats.rejected_frames = 5
    metrics.reconnected()  # the watchdog's own reconnect
    assert metrics.as_dict() | {"feed_lag_s": None} == {
        "candles": 0,
        "rejected": 5,
        "reconnects": 2,
        "feed_lag_s": None,
    }
