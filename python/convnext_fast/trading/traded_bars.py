"""Which bars a backtest or replay trades: from ``--start``, or by default from the checkpoint's
out-of-sample start (never the bars it was fitted on), and where its fitted ranges end."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import UserError

if TYPE_CHECKING:
    from .model_meta import ModelMeta


def first_traded_ms(start: str | None, meta: ModelMeta | None) -> tuple[int | None, str | None]:
    """``(start_ms or None for the first bar, note)`` of ``--start`` (YYYY-MM-DD[ HH:MM] UTC, epoch ms,
    'all'). Without ``--start`` and with a checkpoint the default is the start of its out-of-sample test
    range: trading the bars it was trained on would report an in-sample fantasy. ``note`` says so."""
    from ..data.intervals import parse_time_ms

    if start == "all":
        return None, None
    if start is not None:
        return parse_time_ms(start, "--start"), None
    test_start = None if meta is None else meta.out_of_sample_start
    if not test_start:
        return None, None
    note = f"trading from {test_start} UTC, the checkpoint's out-of-sample test range (--start all for every bar)"
    return parse_time_ms(test_start, "the checkpoint's test range"), note


def trained_until_ms(meta: ModelMeta | None) -> int | None:
    """End of the last range the checkpoint was fitted or selected on (train/val), or None if unknown."""
    from ..data.intervals import parse_time_ms

    ends_at = {} if meta is None else meta.fitted_range_ends
    ends = [parse_time_ms(end, f"the checkpoint's {name} range") for name, end in ends_at.items()]
    return max(ends) if ends else None


def first_traded_bar(start: str | None, candles, meta: ModelMeta | None) -> int:
    """Index of the first bar the backtest trades (see :func:`first_traded_ms`)."""
    start_ms, note = first_traded_ms(start, meta)
    if start_ms is None:
        return 0
    if note:
        print(note)
    first = int(np.searchsorted(candles.start_ms, start_ms))
    if first >= len(candles) - 1:
        raise UserError(f"--start: {start or 'the test range start'} leaves fewer than 2 candles to trade")
    return first
