"""Per-phase latency samples (µs) and their p50/p90/p99/max summary."""

from __future__ import annotations

import numpy as np

PERCENTILES = (50, 90, 99)


class LatencyStats:
    """Collects one sample per bar for each named phase (e.g. features, model, decision, total)."""

    def __init__(self):
        self._samples: dict[str, list[float]] = {}

    def add(self, phase: str, micros: float) -> None:
        self._samples.setdefault(phase, []).append(float(micros))

    def add_many(self, micros_by_phase: dict[str, float]) -> None:
        for phase, micros in micros_by_phase.items():
            self.add(phase, micros)

    def __len__(self) -> int:
        return max((len(v) for v in self._samples.values()), default=0)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{phase: {"n", "p50", "p90", "p99", "max"}}`` in µs (phases with no samples are left out)."""
        out = {}
        for phase, samples in self._samples.items():
            values = np.asarray(samples)
            row = {"n": int(values.size)}
            row.update({f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES})
            row["max"] = float(values.max())
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
