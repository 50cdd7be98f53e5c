"""A results table (markdown, readable in a terminal too): every fold and the pool, the model's scores
next to the naive baselines on the same bars."""

from __future__ import annotations

_COLUMNS = {
    "classification": ("accuracy", "balanced_accuracy", "macro_f1", "direction_accuracy", "log_loss"),
    "regression": ("ic", "rank_ic", "direction_accuracy", "mse"),
}
_ROWS = (
    ("model", None),
    ("majority class", "majority_class"),
    ("previous-bar direction", "previous_bar_direction"),
)


def _fmt(value) -> str:
    return "–" if value is None or value != value else f"{value:.4f}"


def _rows(label: str, scores: dict, columns) -> list[str]:
    lines = []
    for name, key in _ROWS:
        metrics = scores["model"] if key is None else scores["baselines"][key]
        cells = [label, name, str(metrics["n"]), *(_fmt(metrics.get(c)) for c in columns)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def results_table(task: str, folds: list[dict], pooled: dict) -> str:
    """Markdown table: per fold (with its test period) and pooled."""
    columns = _COLUMNS[task]
    header = ["test set", "predictor", "n", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fold in folds:
        first, last = fold["ranges"]["test"]
        lines += _rows(f"fold {fold['fold']} ({first[:10]}..{last[:10]})", fold["test"], columns)
    lines += _rows("pooled", pooled, columns)
    return "\n".join(lines)


def confusion_text(pooled: dict) -> str:
    """The pooled confusion matrix (rows: truth, columns: prediction) for classification."""
    names = ("Long", "Short", "Hold")
    cm = pooled["model"]["confusion"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---|---|---|---|"]
    lines += ["| " + names[i] + " | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
    return "\n".join(lines)


def trading_table(folds: list[dict]) -> str:
    """Per fold: τ chosen on its validation bars and its test bars traded at that τ (fees included) next to
    buy-and-hold; empty when no fold was traded (a universe)."""
    traded = [f for f in folds if f.get("trading")]
    if not traded:
        return ""
    lines = [
        "| test set | τ (chosen on validation) | trades | return | buy-and-hold |",
        "|---|---|---|---|---|",
    ]
    for fold in traded:
        first, last = fold["ranges"]["test"]
        t = fold["trading"]["test"]
        lines.append(
            f"| fold {fold['fold']} ({first[:10]}..{last[:10]}) | {fold['trading']['threshold']:g} | "
            f"{t['n_trades']} | {t['total_return']:+.2%} | {t['hold_return']:+.2%} |"
        )
    return "\n".join(lines)
