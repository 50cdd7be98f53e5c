"""Funding rates of linear/inverse perpetuals: fetched from Bybit (``GET /v5/market/funding/history``),
stored beside the candles (``<store>/bybit/<category>/<SYMBOL>/funding.parquet``) and mapped onto bars for
the backtest engine, the paper broker and the demo.

A funding settlement at time ``T`` is paid on the position held at ``T``; the engine charges funding on the
position held at a bar's close, so a settlement lands on the bar whose close time ``start + interval`` is
the first at or after ``T`` (for hourly bars, the 08:00 settlement is charged at the close of the 07:00 bar).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError
from .bybit_common import digits_value
from .candles import format_ms

PERPETUAL_CATEGORIES = ("linear", "inverse")
FUNDING_FILE = "funding.parquet"
MAX_FUNDING_LIMIT = 200  # Bybit's page size for funding history
_live_log = logging.getLogger("convnext_fast.live")  # the schedule's warnings belong to the live loop
_SCHEMA = pa.schema([("time_ms", pa.int64()), ("rate", pa.float64())])


@dataclass(frozen=True)
class FundingRates:
    """Settlement times (epoch ms, ascending, unique) and rates (positive: longs pay shorts)."""

    time_ms: np.ndarray
    rate: np.ndarray

    def __post_init__(self):
        t, r = np.asarray(self.time_ms, dtype=np.int64), np.asarray(self.rate, dtype=np.float64)
        if t.shape != r.shape or t.ndim != 1:
            raise UserError("funding times and rates must be 1-D arrays of one length")
        if not np.isfinite(r).all() or (np.abs(r) > 0.1).any():
            raise UserError("funding rates must be finite and within ±10 % per settlement")
        order = np.argsort(t, kind="stable")
        t, r = t[order], r[order]
        keep = np.ones(len(t), dtype=bool)
        keep[:-1] = t[1:] != t[:-1]  # a repeated time: the later row wins
        object.__setattr__(self, "time_ms", t[keep])
        object.__setattr__(self, "rate", r[keep])

    def __len__(self) -> int:
        return len(self.time_ms)

    def __repr__(self) -> str:
        if not len(self):
            return "FundingRates(empty)"
        return (
            f"FundingRates({len(self)} settlements {format_ms(self.time_ms[0])} → {format_ms(self.time_ms[-1])}, "
            f"mean rate {self.rate.mean():.2e})"
        )

    @classmethod
    def concat(cls, parts: list[FundingRates]) -> FundingRates:
        parts = [p for p in parts if p is not None]
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0))
        return cls(np.concatenate([p.time_ms for p in parts]), np.concatenate([p.rate for p in parts]))

    def per_bar(self, start_ms: np.ndarray, interval_ms: int) -> np.ndarray:
        """The funding rate charged at each bar's close (0 where no settlement falls)."""
        starts = np.asarray(start_ms, dtype=np.int64)
        out = np.zeros(len(starts))
        if not len(starts) or not len(self):
            return out
        ends = starts + int(interval_ms)
        idx = np.searchsorted(ends, self.time_ms, side="left")
        inside = (idx < len(starts)) & (self.time_ms > starts[np.minimum(idx, len(starts) - 1)])
        np.add.at(out, idx[inside], self.rate[inside])
        return out


def funding_path(store_root: str | Path, symbol: str, category: str = "linear") -> Path:
    from .store import CandleStore

    return CandleStore(store_root).path(symbol, "60", category).parent / FUNDING_FILE


def save_funding(store_root: str | Path, rates: FundingRates, symbol: str, category: str = "linear") -> Path:
    """Merge ``rates`` into what is stored (atomically, as the candle store writes)."""
    from .store import _atomic_write_table

    path = funding_path(store_root, symbol, category)
    stored = load_funding(path) if path.is_file() else None
    merged = FundingRates.concat([stored, rates])
    table = pa.table({"time_ms": merged.time_ms, "rate": merged.rate}, schema=_SCHEMA)
    _atomic_write_table(table.replace_schema_metadata({"symbol": symbol, "category": category}), path)
    return path


def load_funding(path: str | Path) -> FundingRates:
    """From a ``funding.parquet`` or a CSV with ``time_ms,rate`` columns."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            data = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
            return FundingRates(np.atleast_1d(data["time_ms"]), np.atleast_1d(data["rate"]))
        table = pq.read_table(path)
        return FundingRates(table.column("time_ms").to_numpy(), table.column("rate").to_numpy())
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise UserError(f"cannot read funding rates from {path}: {exc}") from None


def find_funding(data: str | Path, symbol: str, category: str = "linear") -> FundingRates | None:
    """The funding stored beside ``--data`` (a store folder, or a file inside one), None when there is none."""
    path = Path(data)
    candidates = [funding_path(path, symbol, category)] if path.is_dir() else [path.parent / FUNDING_FILE]
    for candidate in candidates:
        if candidate.is_file():
            return load_funding(candidate)
    return None


def parse_funding_page(body) -> tuple[FundingRates, int]:
    """One ``/v5/market/funding/history`` reply as (FundingRates, rows on the page: a full page means there
    may be older ones); anything else is a UserError naming what (the live schedule catches those and
    retries later, so a garbled reply never stops the loop)."""
    result = body.get("result") if isinstance(body, dict) else None
    rows = result.get("list") if isinstance(result, dict) else None
    if not isinstance(rows, list):
        raise UserError(f"Bybit funding history has no result.list: {str(body)[:200]}")
    times, rates = [], []
    for row in rows:
        at = row.get("fundingRateTimestamp") if isinstance(row, dict) else None
        ms = digits_value(str(at) if type(at) is int else at, 15)  # epoch ms; int64 holds 18 digits
        try:
            if ms is None:
                raise ValueError
            times.append(ms)
            rates.append(float(row["fundingRate"]))
        except (KeyError, TypeError, ValueError):
            raise UserError(f"Bybit funding history row not understood: {str(row)[:200]}") from None
    return FundingRates(np.array(times, dtype=np.int64), np.array(rates, dtype=np.float64)), len(rows)


def fetch_funding(client, symbol: str, start_ms: int, end_ms: int) -> FundingRates:
    """Every settlement in [start_ms, end_ms] from Bybit, paging backwards from ``end_ms`` (the endpoint
    returns the newest ``limit`` rows of a range)."""
    if client.category not in PERPETUAL_CATEGORIES:
        raise UserError(f"funding exists for perpetuals (linear/inverse), not category {client.category!r}")
    parts, end = [], int(end_ms)
    while end >= start_ms:
        params = {"category": client.category, "symbol": symbol, "startTime": int(start_ms),
                  "endTime": end, "limit": MAX_FUNDING_LIMIT}  # fmt: skip
        body = client._get("/v5/market/funding/history", params)  # retried and rate-limited like klines
        page, rows = parse_funding_page(body)
        if not len(page):
            break
        parts.append(page)
        oldest = int(page.time_ms.min())
        if rows < MAX_FUNDING_LIMIT or oldest >= end:
            break
        end = oldest - 1
    rates = FundingRates.concat(parts)
    keep = (rates.time_ms >= start_ms) & (rates.time_ms <= end_ms)
    return FundingRates(rates.time_ms[keep], rates.rate[keep])


def synthetic_funding(start_ms: int, end_ms: int, *, seed: int = 0, every_h: int = 8) -> FundingRates:
    """SYNTHETIC funding (not a real market's): settlements every ``every_h`` hours, rates around Bybit's
    0.01 % baseline with persistent drift, for runs without funding history."""
    step = every_h * 3_600_000
    times = np.arange((start_ms // step + 1) * step, end_ms + 1, step, dtype=np.int64)
    rng = np.random.default_rng(seed)
    drift = np.cumsum(rng.normal(0, 2e-5, len(times))) * 0.2
    return FundingRates(times, np.clip(1e-4 + drift + rng.normal(0, 5e-5, len(times)), -3e-3, 3e-3))


class FundingSchedule:
    """Per-bar funding for the live paper broker: known settlements plus, for a live market, a refresh
    (``refresh(after_ms, until_ms) -> FundingRates``) asked when a bar closes past the newest settlement
    known.

    A bar pays the settlements inside it, as in the backtest (``FundingRates.per_bar``). Two live
    differences, neither of which loses a payment:

    - A refresh asks ``LOOKAHEAD_MS`` past the bar at hand and the exchange answers with what has settled
      by its own clock, so a loop catching up on a backlog (a cold start, a resume after downtime) makes
      one request for up to 30 days of bars instead of one per bar.
    - A settlement the exchange publishes only after its bar was charged (the loop sees a bar within a
      second of its close) is paid with the next bar, once a refresh returns it.

    A failed refresh is logged, the bar is charged what is known, and the next attempt waits (1 s, doubling
    to 5 min; ``clock_ms`` is the wall clock) so a backlog does not hammer a failing endpoint."""

    LOOKAHEAD_MS = 30 * 86_400_000
    RETRY_MAX_S = 300.0

    def __init__(
        self,
        rates: FundingRates | None,
        interval_ms: int,
        refresh: Callable | None = None,
        *,
        known_until_ms: int | None = None,
        clock_ms: Callable[[], int] | None = None,
    ):
        self.rates = rates or FundingRates.concat([])
        self.interval_ms, self.refresh = int(interval_ms), refresh
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))
        if known_until_ms is None:
            known_until_ms = int(self.rates.time_ms[-1]) if len(self.rates) else 0
        self._asked_until = int(known_until_ms)  # every settlement up to here is known
        self._failures, self._retry_at_ms = 0, 0
        self._prev_start_ms: int | None = None  # the latest bar charged
        self._paid_through_ms = 0  # the latest settlement charged

    def rate_for_bar(self, start_ms: int) -> float:
        start = int(start_ms)
        end = start + self.interval_ms
        if self.refresh is not None and end > self._asked_until:
            self._refresh(end)
        # The bar's own settlements, plus those of the bar just before it that were published too late for it.
        prev = self._prev_start_ms
        low = prev if prev is not None and prev + self.interval_ms == start else start
        low = max(low, self._paid_through_ms)
        times = self.rates.time_ms
        lo, hi = np.searchsorted(times, low, side="right"), np.searchsorted(times, end, side="right")
        rate = 0.0
        for r in self.rates.rate[lo:hi]:  # summed in time order from 0.0, as per_bar does
            rate += float(r)
        if hi > lo:
            self._paid_through_ms = int(times[hi - 1])
        self._prev_start_ms = start
        return rate

    def _refresh(self, end: int) -> None:
        now = int(self._clock_ms())
        if now < self._retry_at_ms:
            return
        try:
            fresh = self.refresh(self._asked_until + 1, end + self.LOOKAHEAD_MS)
        except UserError as exc:  # must not stop the loop: charged what is known, retried after a pause
            self._failures += 1
            pause_s = min(self.RETRY_MAX_S, 2.0 ** (self._failures - 1))
            self._retry_at_ms = now + int(pause_s * 1000)
            _live_log.warning("funding history not refreshed (next try in %.0f s): %s", pause_s, exc)
            return
        self.rates = FundingRates.concat([self.rates, fresh])
        if len(fresh):  # complete up to the newest settlement; later ones may still be on their way
            self._asked_until = max(self._asked_until, int(fresh.time_ms[-1]))
        self._failures, self._retry_at_ms = 0, 0

    def state(self, keep: int = 8) -> dict:
        """How far the settlements are known, where the charging stands, every settlement still to be paid
        and the ``keep`` before them: a resumed live schedule asks the exchange only for what came after, not
        for the whole history again."""
        after = self._prev_start_ms if self._prev_start_ms is not None else 0
        first = max(0, int(np.searchsorted(self.rates.time_ms, after, side="right")) - keep)
        return {
            "asked_until": self._asked_until,
            "prev_start": self._prev_start_ms,
            "paid_through": self._paid_through_ms,
            "time_ms": self.rates.time_ms[first:].tolist(),
            "rate": self.rates.rate[first:].tolist(),
        }

    def set_state(self, state: dict) -> None:
        saved = FundingRates(np.array(state["time_ms"], np.int64), np.array(state["rate"], np.float64))
        self.rates = FundingRates.concat([self.rates, saved])
        self._asked_until = max(self._asked_until, int(state["asked_until"]))
        if state.get("prev_start") is not None:  # absent in states saved before late settlements were paid
            self._prev_start_ms = int(state["prev_start"])
        self._paid_through_ms = max(self._paid_through_ms, int(state.get("paid_through", 0)))


def funding_for_bars(args, start_ms: np.ndarray, *, symbol: str, category: str = "linear", say=print):
    """The per-bar funding ``backtest``/``demo`` apply: ``--funding PATH``, else the store's funding beside
    ``--data`` for a perpetual; None with ``--no-funding`` or when there is none (said in one line)."""
    if getattr(args, "no_funding", False) or category not in PERPETUAL_CATEGORIES or len(start_ms) < 2:
        return None
    if getattr(args, "funding", None):
        rates = load_funding(args.funding)
    else:
        rates = find_funding(args.data, symbol, category) if getattr(args, "data", None) else None
        if rates is None:
            say(
                f"no funding history beside {args.data or 'the data'} for {symbol}: funding not charged "
                "(convnext-fast fetch --funding, or --funding PATH; --no-funding to silence)"
            )
            return None
    interval_ms = int(np.median(np.diff(start_ms)))
    first, last = int(start_ms[0]), int(start_ms[-1]) + interval_ms
    covered = rates.time_ms[(rates.time_ms > first) & (rates.time_ms <= last)]
    if not len(covered):
        say(f"the funding history ({rates!r}) does not cover the traded bars: funding not charged")
        return None
    say(f"funding: {len(covered)} settlements applied ({rates!r})")
    return rates.per_bar(start_ms, interval_ms)


def update_store_funding(client, store_root, symbol: str, start_ms: int | None, end_ms: int | None) -> str:
    """``fetch --funding``: fetch the funding settlements over the stored candles' range (or
    [start_ms, end_ms]) into the store; returns a one-line report."""
    import time

    from .store import CandleStore

    store = CandleStore(store_root)
    if start_ms is None:
        stored = [
            store.load(symbol, p.stem, client.category)
            for p in sorted(store.path(symbol, "60", client.category).parent.glob("*.parquet"))
            if p.name != FUNDING_FILE
        ]
        starts = [int(c.start_ms[0]) for c in stored if len(c)]
        if not starts:
            raise UserError("fetch --funding needs --start or candles already in the store")
        start_ms = min(starts)
    end_ms = int(time.time() * 1000) if end_ms is None else int(end_ms)
    rates = fetch_funding(client, symbol, int(start_ms), end_ms)
    path = save_funding(store_root, rates, symbol, client.category)
    return f"{path}: {rates!r}"
