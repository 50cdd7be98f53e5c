"""Local candle store: one Parquet file per (exchange, category, symbol, interval).

Parquet (pyarrow) because it is columnar, typed, compressed and read back as numpy without parsing; a
full rewrite per update is cheap at these sizes (years of 1h candles are a few MB) and keeps every write
atomic: write a temp file in the same folder, fsync it, ``os.replace`` it over the old one, fsync the
folder. A crash at any point leaves either the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from convnext_fast.data.candles import (
    Candles,
    Gap,
    check_interval,
    next_start_ms,
)
from convnext_fast.errors import UserError

if TYPE_CHECKING:
    from convnext_fast.data.bybit import BybitClient

FORMAT_VERSION = "1"
_SCHEMA = pa.schema(
    [("start_ms", pa.int64())]
    + [(c, pa.float64()) for c in ("open", "high", "low", "close", "volume", "turnover")]
)


@dataclass(frozen=True)
class UpdateReport:
    path: Path
    added: int
    candles: Candles
    gaps: list[Gap]

    def __str__(self) -> str:
        lines = [f"{self.path}: +{self.added} candles, {self.candles!r}"]
        lines += [f"  gap: {gap}" for gap in self.gaps]
        return "\n".join(lines)


class CandleStore:
    """Candles under ``root/exchange/category/symbol/interval.parquet``, validated on every write."""

    def __init__(self, root: str | Path, exchange: str = "bybit"):
        self.root = Path(root)
        self.exchange = _safe_name(exchange, "exchange")

    def path(self, symbol: str, interval: str | int, category: str = "linear") -> Path:
        interval = check_interval(interval)
        return (
            self.root
            / self.exchange
            / _safe_name(category, "category")
            / _safe_name(symbol, "symbol")
            / (f"{interval}.parquet")
        )

    def exists(self, symbol: str, interval: str | int, category: str = "linear") -> bool:
        return self.path(symbol, interval, category).is_file()

    def load(self, symbol: str, interval: str | int, category: str = "linear") -> Candles:
        path = self.path(symbol, interval, category)
        if not path.is_file():
            raise UserError(
                f"no candles stored for {symbol} {interval} ({category}) at {path}; fetch or import them first"
            )
        table = _read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        expected = _metadata(symbol, check_interval(interval), category, self.exchange)
        if any(meta.get(k) != v for k, v in expected.items()):
            raise UserError(f"{path} holds {meta}, expected {expected}")
        return _candles_of(table)

    def write(self, candles: Candles, symbol: str, interval: str | int, category: str = "linear") -> Path:
        """Replace what is stored with ``candles`` after validating them."""
        interval = check_interval(interval)
        candles.validate(interval)
        path = self.path(symbol, interval, category)
        table = pa.table(candles.columns(), schema=_SCHEMA).replace_schema_metadata(
            _metadata(symbol, interval, category, self.exchange)
        )
        _atomic_write_table(table, path)
        return path

    def append(self, candles: Candles, symbol: str, interval: str | int, category: str = "linear") -> Candles:
        """Merge ``candles`` into what is stored; on repeated start times the new candle wins."""
        stored = self.load(symbol, interval, category) if self.exists(symbol, interval, category) else None
        merged = Candles.concat([stored, candles]) if stored is not None else candles
        self.write(merged, symbol, interval, category)
        return merged

    def update(
        self,
        client: BybitClient,
        symbol: str,
        interval: str | int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> UpdateReport:
        """Fetch only what is missing: after the last stored candle (and before the first one when
        ``start_ms`` reaches further back); ``start_ms`` is required for an empty store."""
        interval, category = check_interval(interval), client.category
        stored = (
            self.load(symbol, interval, category)
            if self.exists(symbol, interval, category)
            else Candles.empty()
        )
        parts = [stored]
        if not len(stored):
            if start_ms is None:
                raise UserError(f"nothing stored yet for {symbol} {interval} ({category}): give a start time")
            parts.append(client.fetch_klines(symbol, interval, start_ms, end_ms))
        else:
            if start_ms is not None and start_ms < stored.start_ms[0]:
                parts.append(client.fetch_klines(symbol, interval, start_ms, int(stored.start_ms[0]) - 1))
            after = next_start_ms(stored.start_ms[-1], interval)
            if end_ms is None or end_ms >= after:
                parts.append(client.fetch_klines(symbol, interval, after, end_ms))
        # Stored candles are final: fetched ones only fill in around them, never overwrite.
        merged = Candles.concat(parts[1:] + parts[:1])
        path = self.write(merged, symbol, interval, category)
        return UpdateReport(path, len(merged) - len(stored), merged, merged.gaps(interval))

    def import_csv(
        self, csv_path: str | Path, symbol: str, interval: str | int, category: str = "linear"
    ) -> Candles:
        """Read a CSV (see :meth:`Candles.from_csv`) and merge it into the store."""
        return self.append(Candles.from_csv(csv_path), symbol, interval, category)

    def gaps(self, symbol: str, interval: str | int, category: str = "linear") -> list[Gap]:
        return self.load(symbol, interval, category).gaps(interval)


def load_candles(
    data: str | Path, symbol: str = "BTCUSDT", interval: str = "60", category: str = "linear"
) -> Candles:
    """What every ``--data`` option accepts: a CSV file, one of the store's ``.parquet`` files, or a store
    folder (then ``symbol``/``interval``/``category`` pick the series)."""
    path = Path(data)
    if path.is_file():
        return _candles_of(_read_table(path)) if path.suffix == ".parquet" else Candles.from_csv(path)
    if path.is_dir():
        return CandleStore(path).load(symbol, interval, category=category)
    raise UserError(f"--data {str(data)!r}: no such CSV file, .parquet file or candle-store folder")


def _read_table(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read candle file {path}: {exc}") from exc


def _candles_of(table: pa.Table) -> Candles:
    missing = [name for name in _SCHEMA.names if name not in table.column_names]
    if missing:
        raise UserError(f"candle file lacks columns {missing} (has {table.column_names})")
    return Candles(**{name: table.column(name).to_numpy() for name in _SCHEMA.names})


def _metadata(symbol: str, interval: str, category: str, exchange: str) -> dict[str, str]:
    return {
        "format_version": FORMAT_VERSION,
        "exchange": exchange,
        "category": category,
        "symbol": symbol,
        "interval": interval,
    }


def _safe_name(value: str, what: str) -> str:
    # These become path components, so anything that could walk out of the store root is refused.
    if not isinstance(value, str) or not value or not value.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"{what} must be letters, digits, '-' or '_', got {value!r}")
    return value


def _atomic_write_table(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on Windows, where os.replace is already atomic.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
