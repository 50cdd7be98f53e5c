"""Counters and gauges of a long-running live process, optionally served to Prometheus.

:class:`LiveMetrics` always counts (the summary record reads it); :meth:`LiveMetrics.serve` exposes the
same numbers on ``--metrics-port`` through ``prometheus-client`` (``pip install convnext-fast[live]``):
candles processed, feed lag, reconnects, rejected candles/frames, decision latency histogram, position and
equity.
"""

from __future__ import annotations

import time

from ..errors import UserError

LATENCY_BUCKETS_US = (50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)


class LiveMetrics:
    def __init__(self):
        self.candles = 0
        self.rejects = 0
        self.reconnects = 0
        self.last_lag_s: float | None = None
        self._prom = None
        # The WebSocket client's own counters (data.bybit_ws.StreamStats: frames it dropped, reconnects),
        # folded into ours as they grow.
        self.stream_stats = None
        self._seen = {"rejected_frames": 0, "reconnects": 0}

    def serve(self, port: int, labels: dict[str, str]) -> None:
        """Start the Prometheus endpoint on ``port`` (all interfaces); one-line error when the optional
        dependency is missing or the port is taken."""
        try:
            import prometheus_client as prom
        except ImportError:
            raise UserError(
                "--metrics-port needs prometheus-client: pip install 'convnext-fast[live]'"
            ) from None
        registry = prom.CollectorRegistry()
        names = tuple(labels)
        values = tuple(labels.values())

        def make(kind, name, doc, **kw):
            return getattr(prom, kind)(name, doc, names, registry=registry, **kw).labels(*values)

        self._prom = {
            "candles": make("Counter", "convnext_live_candles", "closed candles processed"),
            "rejects": make("Counter", "convnext_live_rejected", "candles or frames rejected"),
            "reconnects": make("Counter", "convnext_live_reconnects", "feed reconnects"),
            "lag": make("Gauge", "convnext_live_feed_lag_seconds", "candle close to arrival"),
            "position": make("Gauge", "convnext_live_position", "paper position (signed fraction)"),
            "equity": make("Gauge", "convnext_live_equity", "paper equity"),
            "latency": make(
                "Histogram",
                "convnext_live_decision_latency_us",
                "candle to decision (µs)",
                buckets=LATENCY_BUCKETS_US,
            ),
        }
        try:
            prom.start_http_server(port, registry=registry)
        except OSError as exc:
            raise UserError(f"--metrics-port {port}: cannot listen ({exc})") from None

    def _sync_stream(self) -> None:
        stats = self.stream_stats
        if stats is None:
            return
        for name, bump in (("rejected_frames", self.rejected), ("reconnects", self.reconnected)):
            grown = int(getattr(stats, name, 0)) - self._seen[name]
            if grown > 0:
                self._seen[name] += grown
                bump(grown)

    def candle(self, record: dict) -> None:
        self._sync_stream()
        self.candles += 1
        if self._prom is not None:
            p = self._prom
            p["candles"].inc()
            p["position"].set(record["position"])
            p["equity"].set(record["equity"])
            if record.get("probs") is not None or record.get("pred") is not None:
                p["latency"].observe(record["latency_us"]["total"])

    def rejected(self, n: int = 1) -> None:
        self.rejects += n
        if self._prom is not None:
            self._prom["rejects"].inc(n)

    def reconnected(self, n: int = 1) -> None:
        self.reconnects += n
        if self._prom is not None:
            self._prom["reconnects"].inc(n)

    def feed_lag(self, candle, interval_ms: int) -> None:
        """Seconds between the candle's close and its arrival here (a replay shows its age)."""
        self.last_lag_s = time.time() - (candle.start_ms + interval_ms) / 1000.0
        if self._prom is not None:
            self._prom["lag"].set(self.last_lag_s)

    def as_dict(self) -> dict:
        self._sync_stream()
        return {
            "candles": self.candles,
            "rejected": self.rejects,
            "reconnects": self.reconnects,
            "feed_lag_s": None if self.last_lag_s is None else round(self.last_lag_s, 3),
        }
