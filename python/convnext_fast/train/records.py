"""JSON-safe records: metrics files, the per-epoch JSON-lines log and checkpoint metadata."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def to_jsonable(obj):
    """Plain JSON types: numpy scalars/arrays become numbers/lists, tuples lists, NaN/Inf ``None`` (strict
    JSON has no NaN, and a metric that is undefined should read as missing)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj, **kwargs) -> str:
    return json.dumps(to_jsonable(obj), allow_nan=False, **kwargs)


def write_json(path: Path, obj) -> None:
    Path(path).write_text(dumps(obj, indent=2) + "\n")


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(dumps(record) + "\n")
