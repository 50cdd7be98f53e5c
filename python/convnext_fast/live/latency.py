"""Per-phase latency samples (µs) and their p50/p90/p99/max summary, in bounded memory.

A process that runs for weeks must not grow with every candle: percentiles come from the newest
``keep`` samples per phase (a ring buffer), while the count and the maximum cover every sample.
"""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 99)
KEEP = 65_536  # samples per phase for the percentiles (0.5 MiB per phase)


class LatencyStats:
    """Collects one sample per bar for each named phase (e.g. features, model, decision, total)."""

    def __init__(self, keep: int = KEEP):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = int(keep)
        self._ring: dict[str, np.ndarray] = {}
        self._n: dict[str, int] = {}
        self._max: dict[str, float] = {}

    def add(self, phase: str, micros: float) -> None:
        ring = self._ring.get(phase)
        if ring is None:
            ring = self._ring[phase] = np.empty(self.keep)
            self._n[phase], self._max[phase] = 0, float("-inf")
        n = self._n[phase]
        ring[n % self.keep] = micros
        self._n[phase] = n + 1
        if micros > self._max[phase]:
            self._max[phase] = float(micros)

    def add_many(self, micros_by_phase: dict[str, float]) -> None:
        for phase, micros in micros_by_phase.items():
            self.add(phase, micros)

    def __len__(self) -> int:
        return max(self._n.values(), default=0)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{phase: {"n", "p50", "p90", "p99", "max"}}`` in µs (phases with no samples are left out);
        percentiles over the newest ``keep`` samples, ``n`` and ``max`` over all."""
        out = {}
        for phase, ring in self._ring.items():
            n = self._n[phase]
            values = ring[: min(n, self.keep)]
            row = {"n": int(n)}
            row.update({f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES})
            row["max"] = self._max[phase]
            out[phase] = row
        return out

    def table(self) -> str:
        """The summary as a small fixed-width text table."""
        header = (
            f"{'phase':<10}{'n':>8}" + "".join(f"{f'p{q} µs':>12}" for q in PERCENTILES) + f"{'max µs':>12}"
        )
        lines = [header]
        for phase, row in self.summary().items():
            cells = "".join(f"{row[f'p{q}']:>12.1f}" for q in PERCENTILES)
            lines.append(f"{phase:<10}{row['n']:>8}{cells}{row['max']:>12.1f}")
        return "\n".join(lines)
