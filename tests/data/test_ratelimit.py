"""One REST rate limit shared by every symbol and process: the limiter's schedule file, two real
processes against the local fake server, and ``fetch --symbols`` / ``--import-csv`` for many symbols."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from convnext_fast.cli import main
from convnext_fast.data.ratelimit import STATE_DIR_ENV, SharedRateLimiter
from convnext_fast.data.store import CandleStore
from convnext_fast.errors import UserError
from tests.child_env import child_env
from tests.data.fake_bybit import FakeBybit, random_candles

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 0.02
CALLS = 60

_WORKER = textwrap.dedent(
    """
    import sys
    from convnext_fast.data.bybit import BybitClient
    url, shared, calls, interval = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), float(sys.argv[4])
    with BybitClient(url, min_request_interval=interval, shared_rate_limit=shared, progress=False) as c:
        print("ready", flush=True)
        sys.stdin.readline()  # both workers start hammering together
        for _ in range(calls):
            c.server_time_ms()
    """
)


def _two_workers(fake: FakeBybit, state: Path, shared: bool) -> np.ndarray:
    env = child_env(**{STATE_DIR_ENV: str(state)})
    args = [fake.rest_url, "1" if shared else "0", str(CALLS), str(INTERVAL_S)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    before = len(fake.request_times)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    return np.sort(np.array(fake.request_times[before:]))


def _max_in_any(times: np.ndarray, span: float) -> int:
    """The most requests that arrived within any ``span`` seconds."""
    return int((np.searchsorted(times, times + span, side="left") - np.arange(len(times))).max())


@pytest.mark.slow
def test_two_processes_share_one_rate_limit(tmp_path, rng):
    with FakeBybit(random_candles(rng, 50)) as fake:
        shared = _two_workers(fake, tmp_path / "state", shared=True)
        alone = _two_workers(fake, tmp_path / "state", shared=False)
    assert len(shared) == len(alone) == 2 * CALLS
    # The schedule allows span / interval + 1 starts in any span; arrival jitter on a busy box adds a few.
    span = 1.0
    limit = span / INTERVAL_S + 1
    # Slack of 5 requests: a process woken up to 100 ms late bunches its request with the next ones.
    assert _max_in_any(shared, span) <= limit + 5
    assert (shared[-1] - shared[0]) >= (2 * CALLS - 1) * INTERVAL_S * 0.9
    # Control: each process pacing only itself goes well over the machine's limit (about twice it).
    assert _max_in_any(alone, span) > limit + 5


def test_limiter_slots_are_spaced_and_survive_a_stale_file(tmp_path):
    limiter = SharedRateLimiter(tmp_path / "slot", 0.5)
    slots = [limiter.reserve() for _ in range(4)]
    assert np.allclose(np.diff(slots), 0.5)
    (tmp_path / "slot").write_bytes(np.array([1e12]).tobytes())  # a slot from a clock far ahead
    other = SharedRateLimiter(tmp_path / "slot", 0.5)
    waited = []
    other.acquire(sleep=waited.append)
    assert waited == [] or waited[0] < 0.01
    with pytest.raises(UserError, match="interval must be > 0"):
        SharedRateLimiter(tmp_path / "slot", 0)


def test_fetch_symbols_fills_one_store(tmp_path, rng, monkeypatch):
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / "state"))
    series = {
        s: random_candles(rng, int(rng.integers(1100, 1500))) for s in ("AAAUSDT", "BBBUSDT", "CCCUSDT")
    }
    with FakeBybit(series["AAAUSDT"], symbol="AAAUSDT", more_symbols=series) as fake:
        start = str(min(int(c.start_ms[0]) for c in series.values()))
        argv = ["fetch", "--symbols", "aaausdt,BBBUSDT,CCCUSDT", "--store", str(tmp_path / "s")]
        assert main([*argv, "--start", start, "--base-url", fake.rest_url]) == 0
        assert {r["symbol"] for r in fake.requests} == set(series)
        assert main(["fetch", "--symbols", "AAAUSDT,NOPE", "--store", str(tmp_path / "s"), "--start", start,
                     "--base-url", fake.rest_url]) == 2  # fmt: skip
    store = CandleStore(tmp_path / "s")
    for symbol, candles in series.items():
        got = store.load(symbol, "60")
        assert np.array_equal(got.start_ms, candles.start_ms) and np.array_equal(got.close, candles.close)


def test_import_csv_per_symbol_and_folder(tmp_path, rng):
    series = {s: random_candles(rng, int(rng.integers(50, 90))) for s in ("AAAUSDT", "BBBUSDT")}
    folder = tmp_path / "csv"
    folder.mkdir()
    for symbol, candles in series.items():
        rows = [
            f"{int(c.start_ms)},{c.open!r},{c.high!r},{c.low!r},{c.close!r},{c.volume!r}" for c in candles
        ]
        (folder / f"{symbol}.csv").write_text(
            "timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n"
        )
    pairs = [f"{s}={folder / f'{s}.csv'}" for s in series]
    assert (
        main(["fetch", "--store", str(tmp_path / "a"), *(a for p in pairs for a in ("--import-csv", p))]) == 0
    )
    assert (
        main(["fetch", "--store", str(tmp_path / "b"), "--import-csv", str(folder), "--symbols", "BBBUSDT"])
        == 0
    )
    for symbol, candles in series.items():
        assert np.array_equal(CandleStore(tmp_path / "a").load(symbol, "60").close, candles.close)
    assert CandleStore(tmp_path / "b").exists("BBBUSDT", "60") and not CandleStore(tmp_path / "b").exists(
        "AAAUSDT", "60"
    )
    assert (
        main(["fetch", "--store", str(tmp_path / "c"), "--import-csv", str(folder), "--symbols", "ZZZ"]) == 2
    )
