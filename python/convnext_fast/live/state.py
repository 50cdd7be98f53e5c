"""The live loop's resume file: what a restart needs to continue exactly where a shutdown stopped.

Written atomically (temp file + rename) as JSON, so a crash mid-write never leaves a half file behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import UserError

STATE_VERSION = 1


@dataclass
class LiveState:
    symbol: str
    interval: str
    last_start_ms: int  # start of the last closed candle processed
    broker: dict = field(default_factory=dict)  # PaperBroker.state(): open position, equity, pending order
    bars_processed: int = 0
    version: int = STATE_VERSION


def save_state(path: str | os.PathLike, state: LiveState) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(asdict(state), f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_state(path: str | os.PathLike) -> LiveState:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--resume: state file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"--resume: state file {path} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
        raise UserError(
            f"--resume: state file {path} has an unknown format (expected version {STATE_VERSION})"
        )
    try:
        return LiveState(**raw)
    except TypeError as exc:
        raise UserError(f"--resume: state file {path} is missing or has unknown fields ({exc})") from None
