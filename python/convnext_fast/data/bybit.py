"""Bybit V5 market-data client: paginated, retried REST klines and a gap-free WebSocket kline stream.

REST goes through httpx, the stream through ``websockets`` (see :mod:`convnext_fast.data.bybit_ws`).
Only closed candles are ever returned as final; base URLs are configurable so tests use a local fake.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
from tqdm.auto import tqdm

from convnext_fast.data.bybit_common import BybitError
from convnext_fast.data.bybit_common import check_symbol as _check_symbol
from convnext_fast.data.candles import Candles, check_interval, format_ms, next_start_ms
from convnext_fast.data.ohlcv import EARLIEST_MS, describe_ms
from convnext_fast.errors import UserError

log = logging.getLogger(__name__)
CATEGORIES = ("spot", "linear", "inverse")
MAX_LIMIT = 1000
# Longest candle Bybit serves ("M"); pages are sized so one page can never hold more than `limit` candles.
_LONGEST_CANDLE_MS = 31 * 86_400_000
_RETRY_RET_CODES = {10000: "server timeout", 10006: "too many visits", 10016: "server error"}
_UNKNOWN_SYMBOL_CODES = {10001, 170121}
# Bybit's own default page is 200 rows; a walk averaging under 100 new rows per request is not advancing.
_MIN_PAGE_ROWS = 100
_LATEST_SANE_MS = 4_102_444_800_000  # 2100-01-01: a server time past it is garbage, not a clock skew
_REQUEST_FAULTS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class BybitRateLimitError(BybitError):
    """HTTP 403: Bybit has blocked this IP for exceeding its rate limit."""


class BybitRetriesExhausted(BybitError):
    """Transient failures (timeouts, 5xx, 429, busy retCodes) persisted past ``max_retries``."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt k waits uniform(0.5, 1) · min(max_delay, base · 2^k)."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.0)


class _Retry(Exception):
    def __init__(self, reason: str, wait_s: float | None = None):
        super().__init__(reason)
        self.wait_s = wait_s


class BybitClient:
    """Bybit V5 public market data.

    ``ws_url`` may contain ``{category}``. ``min_request_interval`` paces REST calls (default 0.05 s:
    100 requests / 5 s, a sixth of Bybit's 600 / 5 s IP limit); with ``shared_rate_limit`` (default) that
    pace is one schedule shared by every client and process on this machine that talks to the same host
    (:mod:`convnext_fast.data.ratelimit`), since Bybit counts requests per IP. ``progress`` None shows a bar only on a TTY;
    ``on_retry`` is told one line before each retry wait (default: logged at INFO).
    ``ping_interval``/``ping_timeout``/``reconnect_delay``/``max_reconnect_delay`` tune the stream (see
    :mod:`convnext_fast.data.bybit_ws`); tests shrink them."""

    def __init__(
        self,
        base_url: str = "https://api.bybit.com",
        ws_url: str = "wss://stream.bybit.com/v5/public/{category}",
        category: str = "linear",
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        min_request_interval: float = 0.05,
        progress: bool | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 10.0,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 60.0,
        shared_rate_limit: bool = True,
        on_retry: Callable[[str], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        if category not in CATEGORIES:
            raise UserError(f"category {category!r} is not one of {', '.join(CATEGORIES)}")
        if not ws_url.startswith(("ws://", "wss://")) or not base_url.startswith(("http://", "https://")):
            raise UserError(
                f"base_url must be http(s)://... and ws_url ws(s)://..., got {base_url!r}, {ws_url!r}"
            )
        if timeout <= 0 or min_request_interval < 0 or ping_interval <= 0 or ping_timeout <= 0:
            raise UserError(
                "timeout, ping_interval and ping_timeout must be > 0 and min_request_interval >= 0"
            )
        self.base_url = base_url.rstrip("/")
        self.ws_url = ws_url.format(category=category) if "{category}" in ws_url else ws_url
        self.category = category
        self.retry = retry or RetryPolicy()
        self.min_request_interval = min_request_interval
        self.progress = progress
        # Told (one line) before every retry wait, so a fetch that stalls on 429s/5xx says why; None: logged.
        self.on_retry = on_retry
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        # transport: httpx's injection point (tests answer from memory with httpx.MockTransport)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._pace_lock = threading.Lock()
        self._last_request = 0.0
        self._limiter = None
        if shared_rate_limit and min_request_interval > 0:
            from .ratelimit import SharedRateLimiter, limiter_path

            self._limiter = SharedRateLimiter(
                limiter_path(httpx.URL(self.base_url).netloc.decode()), min_request_interval
            )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BybitClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- REST ---------------------------------------------------------------------------------------

    def server_time_ms(self) -> int:
        """The exchange's clock (``GET /v5/market/time``) in epoch ms: "now" for every range and for the
        candle still forming, so a local clock that lags or leads loses nothing."""
        body = self._get("/v5/market/time", {})
        result = body.get("result")
        nano = result.get("timeNano") if isinstance(result, dict) else None
        try:
            now_ms = int(nano) // 1_000_000 if nano is not None else int(body.get("time"))
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(Infinity), which JSON allows
            raise BybitError(f"Bybit /v5/market/time sent a non-numeric time: {str(body)[:200]!r}") from None
        if not EARLIEST_MS <= now_ms < _LATEST_SANE_MS:
            raise BybitError(
                f"Bybit /v5/market/time sent an implausible time {now_ms} ms: {str(body)[:200]!r}"
            )
        return now_ms

    def fetch_klines(
        self,
        symbol: str,
        interval: str | int,
        start_ms: int,
        end_ms: int | None = None,
        *,
        limit: int = MAX_LIMIT,
        cancel: threading.Event | None = None,
        timeout_s: float | None = None,
        max_requests: int | None = None,
    ) -> Candles:
        """Closed candles whose start lies in [start_ms, end_ms] (end None: up to the server's now),
        ascending, typed, deduplicated and validated. The candle still forming at the server's time is
        left out; holes the exchange itself has stay holes (see ``Candles.gaps``).

        Every page is checked (rows inside the window asked for, the one OHLCV rule, aligned starts); a
        short page is followed by requests for the part of its window it did not cover, so a server that
        returns fewer rows than asked loses nothing. The walk is bounded (``max_requests``, default derived
        from the window) and stoppable: ``cancel`` set or ``timeout_s`` elapsed raises
        :class:`BybitFetchCancelled` between requests and during retry waits."""
        interval = check_interval(interval)
        symbol = _check_symbol(symbol)
        if not 1 <= limit <= MAX_LIMIT:
            raise UserError(f"limit must be in 1..{MAX_LIMIT}, got {limit}")
        start_ms = int(start_ms)
        if start_ms < 0 or (end_ms is not None and int(end_ms) < start_ms):
            raise UserError(f"need 0 <= start_ms <= end_ms, got start_ms={start_ms}, end_ms={end_ms}")
        stop = _Stop(cancel, None if timeout_s is None else time.monotonic() + timeout_s)
        now_ms = self.server_time_ms()
        # Nothing can exist past the server's now, so a far-future end (a garbled time) costs no requests.
        stop_at = now_ms if end_ms is None else min(int(end_ms), now_ms)
        # No market data predates 2009: starting there spares a walk through decades of empty pages.
        start_ms = max(start_ms, EARLIEST_MS)
        if stop_at < start_ms:
            return Candles.empty()
        span = _page_span_ms(interval, limit)
        n_spans = (stop_at - start_ms) // span + 1
        budget = max_requests or 2 * n_spans + _max_rows(interval, start_ms, stop_at) // _MIN_PAGE_ROWS + 4
        if self.progress is None:
            disable = None if n_spans > 2 else True  # None: tqdm shows the bar only on a TTY
        else:
            disable = not self.progress
        # It stays once done (one line per series): what was fetched, how fast, is worth keeping on screen.
        bar = tqdm(total=n_spans, desc=f"{symbol} {interval}", unit="page", disable=disable, leave=True)
        n_candles = 0
        # Windows still to ask for, newest first: Bybit pages run newest first, and a short page tells
        # which part of its window it did not cover.
        todo = [(max(start_ms, hi - span + 1), hi) for hi in range(stop_at, start_ms - 1, -span)][::-1]
        pages, requests = [], 0
        with bar:
            while todo:
                lo, hi = todo.pop()
                stop.check(f"fetching {symbol} {interval} at {format_ms(hi)}")
                if requests >= budget:
                    raise BybitError(
                        f"Bybit {symbol} {interval}: pagination did not finish {format_ms(start_ms)} .. "
                        f"{format_ms(stop_at)} within {budget} requests (the server's pages stopped advancing)"
                    )
                params = {
                    "category": self.category,
                    "symbol": symbol,
                    "interval": interval,
                    "start": lo,
                    "end": hi,
                    "limit": limit,
                }
                page = _parse_kline_list(
                    self._get("/v5/market/kline", params, stop), params, interval, now_ms
                )
                requests += 1
                if not len(page):
                    bar.update()
                    continue
                pages.append(page)
                n_candles += len(page)
                bar.set_postfix_str(f"{n_candles} candles", refresh=False)
                newest, oldest = int(page.start_ms[-1]), int(page.start_ms[0])
                # A short page: ask again for what it left out on either side (the newer side first).
                if _prev_start_ms(oldest, interval) >= lo:
                    todo.append((lo, oldest - 1))
                after = next_start_ms(newest, interval)
                # (Only while a *closed* candle could still follow: the forming one is dropped anyway.)
                if after <= hi and next_start_ms(after, interval) <= now_ms:
                    todo.append((newest + 1, hi))
                bar.update()
        candles = Candles.concat(pages)
        if len(candles) and next_start_ms(candles.start_ms[-1], interval) > now_ms:
            candles = candles[:-1]  # still forming
        gaps = candles.gaps(interval)
        if gaps:  # the exchange's own holes (maintenance): REST is the authority, so say so and go on
            log.warning(
                "Bybit %s %s: %d hole(s) in what the exchange served, first: %s",
                symbol,
                interval,
                len(gaps),
                gaps[0],
            )
        return candles

    def _get(self, path: str, params: dict, stop: _Stop | None = None) -> dict:
        for attempt in range(self.retry.max_retries + 1):
            try:
                return self._get_once(path, params)
            except _Retry as retry:
                if attempt == self.retry.max_retries:
                    raise BybitRetriesExhausted(
                        f"Bybit {path} failed {attempt + 1} times, last: {retry}; params {params}"
                    ) from None
                # A reset time from Bybit says how long to wait; backoff still applies should clocks disagree.
                wait = max(retry.wait_s or 0.0, self.retry.delay(attempt))
                self._report_retry(
                    f"Bybit {path}: {retry}; retry {attempt + 1}/{self.retry.max_retries} in {wait:.1f} s"
                )
                if stop is None:
                    time.sleep(wait)
                else:
                    stop.sleep(wait, f"waiting to retry {path}")
        raise AssertionError("unreachable")

    def _report_retry(self, message: str) -> None:
        if self.on_retry is not None:
            self.on_retry(message)
        else:  # info: the live loop's auto source probes the network and must not start with a warning
            log.info("%s", message)

    def _pace(self) -> None:
        if self._limiter is not None:
            self._limiter.acquire()
            return
        with self._pace_lock:
            wait = self._last_request + self.min_request_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_request = time.monotonic()

    def _get_once(self, path: str, params: dict) -> dict:
        self._pace()
        try:
            response = self._http.get(path, params=params)
        except _REQUEST_FAULTS as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 403:
            raise BybitRateLimitError(
                "Bybit answered HTTP 403: this IP went over Bybit's rate limit and is blocked; back off: send "
                "nothing for at least 10 minutes, then retry with a larger min_request_interval"
            )
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status}")
        if status != 200:
            raise BybitError(f"Bybit {path} answered HTTP {status}: {response.text[:200]!r}")
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BybitError(f"Bybit {path} sent malformed JSON ({exc}): {response.text[:200]!r}") from exc
        if not isinstance(body, dict) or "retCode" not in body:
            raise BybitError(f"Bybit {path} sent a response without retCode: {str(body)[:200]!r}")
        code, message = body["retCode"], body.get("retMsg", "")
        if type(code) is not int:  # a list or dict here would be unhashable in the lookups below
            raise BybitError(f"Bybit {path} sent a retCode that is not an integer: {str(body)[:200]!r}")
        if code == 0:
            return body
        if code == 10006:
            raise _Retry(f"retCode 10006 ({message})", _wait_until_reset(response.headers))
        if code in _RETRY_RET_CODES:
            raise _Retry(f"retCode {code} ({message})")
        if code in _UNKNOWN_SYMBOL_CODES:
            raise BybitError(
                f"Bybit rejected the request (retCode {code}: {message}): check symbol "
                f"{params.get('symbol')!r}, category {params.get('category')!r} and interval "
                f"{params.get('interval')!r}"
            )
        raise BybitError(f"Bybit {path} failed with retCode {code}: {message} (params {params})")

    # ---- WebSocket ----------------------------------------------------------------------------------

    def stream_klines(
        self,
        symbol: str,
        interval: str | int,
        *,
        include_partial: bool = False,
        since_ms: int | None = None,
        max_reconnects: int | None = None,
        stats=None,
        data_timeout: float | None = None,
    ):
        """Async iterator of :class:`~convnext_fast.data.candles.Candle` records (``closed`` tells final
        from forming ones); see :func:`convnext_fast.data.bybit_ws.stream_klines`."""
        from convnext_fast.data.bybit_ws import stream_klines

        return stream_klines(
            self,
            symbol,
            interval,
            include_partial=include_partial,
            since_ms=since_ms,
            max_reconnects=max_reconnects,
            stats=stats,
            data_timeout=data_timeout,
        )


def _page_span_ms(interval: str, limit: int) -> int:
    step = _LONGEST_CANDLE_MS if interval == "M" else next_start_ms(0, interval)
    return step * limit


def _wait_until_reset(headers) -> float | None:
    reset = headers.get("X-Bapi-Limit-Reset-Timestamp")
    try:
        return min(60.0, max(0.0, int(reset) / 1000 - time.time())) if reset else None
    except ValueError:
        return None


def _parse_kline_list(body: dict, params: dict, interval: str, now_ms: int) -> Candles:
    """Bybit kline rows (newest first, 7 strings) into ascending, deduplicated, validated Candles that lie
    inside the requested window; errors name the row."""
    result = body.get("result") if isinstance(body, dict) else None
    rows = result.get("list") if isinstance(result, dict) else None
    if not isinstance(rows, list):
        raise BybitError(f"Bybit kline response has no result.list (params {params}): {str(body)[:200]!r}")
    table = np.empty((len(rows), 7))
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 7:
            raise BybitError(
                f"Bybit kline row {i} should be 7 fields, got {str(row)[:200]} (params {params})"
            )
        try:
            table[i] = [float(x) for x in row]
        except (TypeError, ValueError, OverflowError):
            raise BybitError(
                f"Bybit kline row {i} has a non-numeric field: {str(row)[:200]} (params {params})"
            ) from None
    if not np.isfinite(table).all():
        i = int(np.flatnonzero(~np.isfinite(table).all(axis=1))[0])
        raise BybitError(f"Bybit kline row {i} has a non-finite field: {rows[i]!r} (params {params})")
    starts = table[:, 0]
    outside = np.flatnonzero(
        (starts < params["start"]) | (starts > params["end"]) | (starts != np.round(starts))
    )
    if outside.size:
        i = int(outside[0])
        raise BybitError(
            f"Bybit kline row {i} starts at {describe_ms(starts[i])}, outside the requested window "
            f"{format_ms(params['start'])} .. {format_ms(params['end'])} (the server's pagination did not "
            f"follow the request; params {params})"
        )
    order = np.argsort(starts, kind="stable")
    same = np.flatnonzero(np.diff(starts[order]) == 0)
    differs = same[np.any(table[order][same] != table[order][same + 1], axis=1)]
    if differs.size:
        i = int(order[differs[0]])
        raise BybitError(
            f"Bybit kline page has two different candles starting at {format_ms(starts[i])} (row {i}; "
            f"params {params})"
        )
    candles = Candles.from_unordered(starts.astype(np.int64), *table[:, 1:].T)
    return candles.validate(interval, now_ms=now_ms, source=f"Bybit kline page (params {params})")


class BybitFetchCancelled(BybitError):
    """A fetch stopped because its caller asked it to (cancel event set or time budget spent)."""


class _Stop:
    """Cancellation for a REST walk: an event a caller (e.g. a SIGTERM handler) sets, and/or a deadline."""

    def __init__(self, event: threading.Event | None, deadline: float | None):
        self.event, self.deadline = event, deadline

    def check(self, doing: str) -> None:
        if self.event is not None and self.event.is_set():
            raise BybitFetchCancelled(f"Bybit fetch cancelled while {doing}")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise BybitFetchCancelled(f"Bybit fetch ran out of its time budget while {doing}")

    def sleep(self, seconds: float, doing: str) -> None:
        if self.deadline is not None:
            seconds = min(seconds, max(0.0, self.deadline - time.monotonic()))
        if self.event is not None:
            self.event.wait(seconds)
        else:
            time.sleep(seconds)
        self.check(doing)


def _max_rows(interval: str, start_ms: int, end_ms: int) -> int:
    """Most candles [start_ms, end_ms] can hold (monthly candles counted as 28-day ones)."""
    step = 28 * 86_400_000 if interval == "M" else next_start_ms(0, interval)
    return (end_ms - start_ms) // step + 1


def _prev_start_ms(start_ms: int, interval: str) -> int:
    """Start of the candle before the one starting at ``start_ms``."""
    if interval != "M":
        return start_ms - next_start_ms(0, interval)
    month = np.datetime64(int(start_ms), "ms").astype("datetime64[M]") - np.timedelta64(1, "M")
    return int(month.astype("datetime64[ms]").astype(np.int64))
