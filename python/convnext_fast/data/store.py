"""Local candle store: one Parquet file per (exchange, category, symbol, interval).

Parquet (pyarrow) because it is columnar, typed, compressed and read back as numpy without parsing; a
full rewrite per update is cheap at these sizes (years of 1h candles are a few MB) and keeps every write
atomic: write a temp file in the same folder, fsync it, ``os.replace`` it over the old one, fsync the
folder. A crash at any point leaves either the old file or the new one, never a mix.

Concurrency: writers of one series take an exclusive ``fcntl.flock`` on ``.<interval>.parquet.lock`` next to
it for the whole read-merge-write, waiting up to ``lock_timeout`` seconds, so two processes appending to one
series lose nothing. Readers take no lock: they open the final file once (never a temp file) and read that
one inode, which a concurrent ``os.replace`` cannot change under them. Temp files a killed writer left behind
are removed by the next writer (under the lock, so never a live writer's) or reader that finds the lock free.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
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


class StoreLockedError(UserError):
    """Another process held a series' write lock for longer than ``lock_timeout``."""


class CandleStore:
    """Candles under ``root/exchange/category/symbol/interval.parquet``, validated on every write; writers
    are serialised per series by a lock file (``lock_timeout`` seconds of waiting, then
    :class:`StoreLockedError`)."""

    def __init__(self, root: str | Path, exchange: str = "bybit", *, lock_timeout: float = 60.0):
        self.root = Path(root)
        self.exchange = _safe_name(exchange, "exchange")
        self.lock_timeout = float(lock_timeout)

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
        _clean_if_unlocked(path)
        table = _read_table(path)
        tags = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        expected = _metadata(symbol, check_interval(interval), category, self.exchange)
        if any(tags.get(k) != v for k, v in expected.items()):
            raise UserError(f"{path} holds {tags}, expected {expected}")
        return _candles_of(table)

    def write(self, candles: Candles, symbol: str, interval: str | int, category: str = "linear") -> Path:
        """Replace what is stored with ``candles`` after validating them."""
        interval = check_interval(interval)
        candles.validate(interval)
        path = self.path(symbol, interval, category)
        with self.locked(path):
            self._write_locked(candles, path, symbol, interval, category)
        return path

    def append(self, candles: Candles, symbol: str, interval: str | int, category: str = "linear") -> Candles:
        """Merge ``candles`` into what is stored; on repeated start times the new candle wins."""
        interval = check_interval(interval)
        candles.validate(interval)
        path = self.path(symbol, interval, category)
        with self.locked(path):
            stored = self._load_if_any(symbol, interval, category)
            merged = Candles.concat([stored, candles])
            self._write_locked(merged, path, symbol, interval, category)
        return merged

    def update(
        self,
        client: BybitClient,
        symbol: str,
        interval: str | int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        cancel=None,
    ) -> UpdateReport:
        """Fetch only what is missing: after the last stored candle, before the first one when ``start_ms``
        reaches further back, and every hole between stored candles (holes the exchange itself has stay
        and are reported); ``start_ms`` is required for an empty store. ``cancel`` (a threading.Event)
        stops the fetch between requests."""
        interval, category = check_interval(interval), client.category
        stored = self._load_if_any(symbol, interval, category)

        def fetch(lo: int, hi: int | None) -> Candles:
            return client.fetch_klines(symbol, interval, lo, hi, cancel=cancel)

        fetched = []
        if not len(stored):
            if start_ms is None:
                raise UserError(f"nothing stored yet for {symbol} {interval} ({category}): give a start time")
            fetched.append(fetch(start_ms, end_ms))
        else:
            if start_ms is not None and start_ms < stored.start_ms[0]:
                fetched.append(fetch(start_ms, int(stored.start_ms[0]) - 1))
            for gap in stored.gaps(interval):
                if (start_ms is None or gap.next_present_ms > start_ms) and (
                    end_ms is None or gap.first_missing_ms <= end_ms
                ):
                    fetched.append(fetch(gap.first_missing_ms, gap.next_present_ms - 1))
            after = next_start_ms(stored.start_ms[-1], interval)
            if end_ms is None or end_ms >= after:
                fetched.append(fetch(after, end_ms))
        path = self.path(symbol, interval, category)
        # The fetch ran unlocked (it may take minutes); the merge re-reads the store under the lock so that
        # a concurrent writer's candles are kept. Stored candles are final: fetched ones only fill in.
        with self.locked(path):
            current = self._load_if_any(symbol, interval, category)
            merged = Candles.concat([*fetched, current])
            merged.validate(interval)
            self._write_locked(merged, path, symbol, interval, category)
        return UpdateReport(path, len(merged) - len(current), merged, merged.gaps(interval))

    @contextlib.contextmanager
    def locked(self, path: Path):
        """Hold the exclusive write lock of the series stored at ``path`` (waits up to ``lock_timeout``)."""
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(f".{path.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise StoreLockedError(
                            f"{path} is being written by another process (lock {lock_path} still held after "
                            f"{self.lock_timeout:g} s); wait for it to finish, or raise lock_timeout"
                        ) from None
                    time.sleep(0.01)
            _remove_stale_temps(path)  # under the lock no live writer owns a temp file
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load_if_any(self, symbol: str, interval: str, category: str) -> Candles:
        if self.exists(symbol, interval, category):
            return self.load(symbol, interval, category)
        return Candles.empty()

    def _write_locked(self, candles: Candles, path: Path, symbol: str, interval: str, category: str) -> None:
        table = pa.table(candles.columns(), schema=_SCHEMA).replace_schema_metadata(
            _metadata(symbol, interval, category, self.exchange)
        )
        _atomic_write_table(table, path)

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
    # One open file: a path-based read may stat and open separately and straddle a concurrent os.replace.
    try:
        with open(path, "rb") as f:
            return pq.read_table(f)
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


def _temp_files(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def _remove_stale_temps(path: Path) -> None:
    for tmp in _temp_files(path):
        with contextlib.suppress(OSError):
            tmp.unlink()


def _clean_if_unlocked(path: Path) -> None:
    """Remove temp files a killed writer left, if no writer holds the lock now (a reader never waits)."""
    if not _temp_files(path):
        return
    import fcntl

    with contextlib.suppress(OSError):
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _remove_stale_temps(path)
        finally:
            os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on Windows, where os.replace is already atomic.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
