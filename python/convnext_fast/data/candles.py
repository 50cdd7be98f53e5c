"""OHLCV candles as a column container: equal-length numpy arrays with strictly increasing start times.

Every producer (Bybit REST/WebSocket, the Parquet store, CSV import) hands back ``Candles`` so that
features, labels and backtests see one layout. Times are candle *start* times in epoch milliseconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from convnext_fast.data.intervals import (  # noqa: F401  (re-exported: the names candles always had)
    INTERVALS,
    check_interval,
    format_ms,
    interval_to_ms,
    next_start_ms,
)
from convnext_fast.data.ohlcv import InvalidCandlesError, check_ohlcv
from convnext_fast.errors import UserError

PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "turnover")


class Candle(NamedTuple):
    """One candle; ``closed`` is False for a still-forming candle from the live stream."""

    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    turnover: float = float("nan")
    closed: bool = True


@dataclass(frozen=True, eq=False)
class Candles:
    """Candles in ascending start order. ``turnover`` (quote volume) is NaN when the source lacks it.

    Construction checks shapes and strict ordering; :meth:`validate` additionally checks OHLC consistency.
    Use :meth:`from_unordered` for rows in any order or with duplicates."""

    start_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    turnover: np.ndarray

    def __post_init__(self):
        n = None
        for f in fields(self):
            dtype = np.int64 if f.name == "start_ms" else np.float64
            # A read-only view: slices share these columns, yet the caller's own array stays writable.
            arr = np.ascontiguousarray(getattr(self, f.name), dtype=dtype).view()
            if arr.ndim != 1:
                raise InvalidCandlesError(f"Candles.{f.name} must be 1-D, got shape {arr.shape}")
            n = len(arr) if n is None else n
            if len(arr) != n:
                raise InvalidCandlesError(f"Candles.{f.name} has {len(arr)} rows, start_ms has {n}")
            arr.flags.writeable = False
            object.__setattr__(self, f.name, arr)
        bad = np.flatnonzero(np.diff(self.start_ms) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise InvalidCandlesError(
                f"Candles.start_ms must be strictly increasing: row {i} ({format_ms(self.start_ms[i])}) "
                f"is not after row {i - 1} ({format_ms(self.start_ms[i - 1])})"
            )

    @classmethod
    def empty(cls) -> Candles:
        return cls(np.empty(0, np.int64), *(np.empty(0) for _ in PRICE_COLUMNS))

    @classmethod
    def from_unordered(cls, start_ms, open, high, low, close, volume, turnover=None) -> Candles:
        """Sort by start time and drop repeated start times, keeping the *last* occurrence (later data
        revises earlier data, e.g. a re-fetched candle)."""
        start = np.asarray(start_ms, dtype=np.int64)
        turnover = np.full(len(start), np.nan) if turnover is None else turnover
        cols = [np.asarray(c, dtype=np.float64) for c in (open, high, low, close, volume, turnover)]
        # Reverse before a stable unique so that np.unique's first-occurrence rule keeps the last row.
        _, idx = np.unique(start[::-1], return_index=True)
        keep = len(start) - 1 - idx
        return cls(start[keep], *(c[keep] for c in cols))

    @classmethod
    def concat(cls, parts) -> Candles:
        """Merge candle sets; where start times repeat, the later part wins."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        columns = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        return cls.from_unordered(**columns)

    @classmethod
    def from_rows(cls, rows) -> Candles:
        """From ``Candle`` records in any order (later records win on repeated start times)."""
        rows = [Candle(*r) for r in rows]
        if not rows:
            return cls.empty()
        return cls.from_unordered(*zip(*(r[:7] for r in rows), strict=True))

    @classmethod
    def from_csv(cls, path: str | Path) -> Candles:
        """Read a CSV with a time column (timestamp/time/date/datetime/open_time/start..., as ISO text or
        epoch s/ms/us) and open/high/low/close/volume (+ optional turnover) columns, any letter case, rows
        in either order. Exact duplicate rows are dropped; conflicting duplicates are an error."""
        return _read_csv(Path(path))

    def __len__(self) -> int:
        return len(self.start_ms)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return Candle(*(getattr(self, f.name)[index].item() for f in fields(self)))
        if isinstance(index, slice) and index.step not in (None, 1):
            raise ValueError("Candles slices must have step 1 (a stride would skip candles)")
        return Candles(*(getattr(self, f.name)[index] for f in fields(self)))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        if not len(self):
            return "Candles(empty)"
        return f"Candles({len(self)} rows, {format_ms(self.start_ms[0])} .. {format_ms(self.start_ms[-1])})"

    def equals(self, other: Candles) -> bool:
        """Exact equality of every column (NaN equals NaN)."""
        return len(self) == len(other) and all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name), equal_nan=f.name != "start_ms")
            for f in fields(self)
        )

    def columns(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def validate(
        self, interval: str | int | None = None, *, now_ms: int | None = None, source: str | None = None
    ) -> Candles:
        """Raise :class:`InvalidCandlesError` naming the first bad row unless every row passes the one
        OHLCV rule (:mod:`convnext_fast.data.ohlcv`); ``interval`` adds the start-alignment check,
        ``source`` prefixes the message."""
        check_ohlcv(
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume,
            self.turnover,
            start_ms=self.start_ms,
            interval=interval,
            now_ms=now_ms,
            source=source,
        )
        return self

    def gaps(self, interval: str | int) -> list[Gap]:
        """Runs of missing candles between consecutive stored ones."""
        if len(self) < 2:
            return []
        text = check_interval(interval)
        if text == "M":
            expected = np.array([next_start_ms(s, text) for s in self.start_ms[:-1]], dtype=np.int64)
            holes = np.flatnonzero(self.start_ms[1:] != expected)
            return [Gap(int(expected[i]), int(self.start_ms[i + 1]), -1) for i in holes]
        step = interval_to_ms(text)
        diffs = np.diff(self.start_ms)
        holes = np.flatnonzero(diffs != step)
        return [
            Gap(
                int(self.start_ms[i]) + step,
                int(self.start_ms[i + 1]),
                int(diffs[i] // step) - 1 if diffs[i] % step == 0 else -1,
            )
            for i in holes
        ]


class Gap(NamedTuple):
    """Missing candles: the first missing start, the next present start, and how many are missing
    (-1 when the count is not a whole number of intervals, e.g. misaligned data or monthly candles)."""

    first_missing_ms: int
    next_present_ms: int
    n_missing: int

    def __str__(self) -> str:
        count = "?" if self.n_missing < 0 else str(self.n_missing)
        return f"{count} missing from {format_ms(self.first_missing_ms)} to before {format_ms(self.next_present_ms)}"


_TIME_ALIASES = (
    "timestamp",
    "time",
    "date",
    "datetime",
    "open_time",
    "opentime",
    "start",
    "start_ms",
    "starttime",
)
_COLUMN_ALIASES = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
    "turnover": ("turnover", "quote_volume", "quotevolume"),
}


def _read_csv(path: Path) -> Candles:
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pa_csv

    if not path.is_file():
        raise UserError(f"CSV file not found: {path}")
    try:
        table = pa_csv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"cannot parse CSV {path}: {exc}") from exc
    by_lower = {name.strip().lower(): name for name in table.column_names}
    if len(set(table.column_names)) != len(table.column_names):
        raise UserError(f"CSV {path} repeats a column name: {table.column_names}")

    def column(aliases, required=True):
        for alias in aliases:
            if alias in by_lower:
                return table.column(by_lower[alias])
        if required:
            raise UserError(f"CSV {path} has no {aliases[0]!r} column (found {table.column_names})")
        return None

    time_col = column(_TIME_ALIASES)
    start_ms = _epoch_ms(time_col, path)
    values = {}
    for name, aliases in _COLUMN_ALIASES.items():
        col = column(aliases, required=name != "turnover")
        if col is None:
            values[name] = np.full(len(start_ms), np.nan)
            continue
        try:
            values[name] = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid as exc:
            raise UserError(f"CSV {path}: column {name!r} is not numeric: {exc}") from exc
    order = np.argsort(start_ms, kind="stable")
    start_ms = start_ms[order]
    values = {k: v[order] for k, v in values.items()}
    same = np.flatnonzero(np.diff(start_ms) == 0)
    if same.size:
        stacked = np.stack(list(values.values()))
        differs = ~np.all((stacked[:, same] == stacked[:, same + 1]) | np.isnan(stacked[:, same]), axis=0)
        if differs.any():
            i = int(same[np.argmax(differs)])
            raise InvalidCandlesError(
                f"CSV {path} has two different candles starting at {format_ms(start_ms[i])}"
            )
    return Candles.from_unordered(start_ms, **values).validate(source=f"CSV {path}")


def _epoch_ms(col, path: Path) -> np.ndarray:
    """Epoch ms from ISO text / timestamp columns (naive times are UTC) or from epoch numbers, whose unit
    (s, ms, us) is told by magnitude: epoch seconds stay below 1e11 until the year 5138."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        text = col.to_numpy(zero_copy_only=False).astype(str)
        text = np.char.rstrip(np.char.replace(text, " ", "T"), "Z")
        try:
            return text.astype("datetime64[ms]").astype(np.int64)
        except ValueError as exc:
            raise UserError(f"CSV {path}: cannot read the time column as ISO dates: {exc}") from exc
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        return (
            pc.cast(col, pa.timestamp("ms", tz=getattr(col.type, "tz", None)))
            .to_numpy(zero_copy_only=False)
            .astype("datetime64[ms]")
            .astype(np.int64)
        )
    numbers = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    if not np.isfinite(numbers).all():
        i = int(np.flatnonzero(~np.isfinite(numbers))[0])
        raise UserError(f"CSV {path}: time column row {i} is empty or not a number")
    magnitude = np.nanmax(np.abs(numbers)) if numbers.size else 0
    scale = 1000.0 if magnitude < 1e11 else (1.0 if magnitude < 1e14 else 1e-3)
    ms = np.round(numbers * scale)
    if ms.size and np.abs(ms).max() >= 2.0**62:  # no int64 epoch ms; the validator names the sane range
        i = int(np.argmax(np.abs(ms)))
        raise UserError(f"CSV {path}: time column row {i} ({numbers[i]!r}) is no epoch time in s, ms or us")
    return ms.astype(np.int64)
