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
