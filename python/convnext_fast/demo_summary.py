"""Rows of the closing summary table that the one-symbol demo (:mod:`.demo`) and the universe demo
(:mod:`.demo_universe`) share; apart from both so that neither demo imports the other's module."""

from __future__ import annotations


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def baseline_accuracy_row(baselines: dict) -> tuple[str, str]:
    """The summary row of the naive baselines' accuracy, next to the model's."""
    return (
        "  majority class / previous bar",
        " / ".join(
            _fmt(baselines.get(k, {}).get("accuracy")) for k in ("majority_class", "previous_bar_direction")
        ),
    )
