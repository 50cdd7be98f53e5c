"""Candle store: round trips, merging, incremental updates, gap reports, crash safety, CSV import, CLI."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from convnext_fast.data import cli
from convnext_fast.data.bybit import BybitClient, RetryPolicy
from convnext_fast.data.candles import Candles, InvalidCandlesError
from convnext_fast.data.store import CandleStore, StoreLockedError, load_candles
from convnext_fast.errors import UserError
from tests.data.fake_bybit import FakeBybit, random_candles

HOUR = 3_600_000


@pytest.fixture
def store(tmp_path) -> CandleStore:
    return CandleStore(tmp_path / "store")


@pytest.fixture
def history(rng) -> Candles:
    return random_candles(rng, int(rng.integers(1500, 2500)))


def client_for(fake: FakeBybit) -> BybitClient:
    return BybitClient(
        fake.rest_url,
        fake.ws_url,
        retry=RetryPolicy(base_delay=0.005),
        min_request_interval=0,
        progress=False,
    )


def test_write_load_round_trip_and_layout(store, history):
    path = store.write(history, "BTCUSDT", "60")
    assert path == store.root / "bybit" / "linear" / "BTCUSDT" / "60.parquet"
    assert store.load("BTCUSDT", 60).equals(history)
    assert not store.exists("BTCUSDT", "60", "spot")
    with pytest.raises(UserError, match="no candles stored for ETHUSDT 60"):
        store.load("ETHUSDT", "60")
    other = store.path("ETHUSDT", "60")
    other.parent.mkdir(parents=True)
    other.write_bytes(path.read_bytes())
    with pytest.raises(UserError, match="'symbol': 'BTCUSDT'"):
        store.load("ETHUSDT", "60")
    with pytest.raises(UserError, match="symbol must be"):
        store.path("../etc", "60")


def test_append_dedups_and_new_candles_win(store, history, rng):
    k = int(rng.integers(100, len(history) - 100))
    store.write(history[:k], "BTCUSDT", "60")
    revised = history[k - 50 :]
    revised = Candles(**{**revised.columns(), "volume": revised.volume * 2})
    merged = store.append(revised, "BTCUSDT", "60")
    assert store.load("BTCUSDT", "60").equals(merged)
    np.testing.assert_array_equal(merged.start_ms, history.start_ms)
    np.testing.assert_array_equal(merged.volume[: k - 50], history.volume[: k - 50])
    np.testing.assert_array_equal(merged.volume[k - 50 :], history.volume[k - 50 :] * 2)


def test_invalid_or_misaligned_candles_are_refused_and_nothing_changes(store, history, rng):
    store.write(history[:100], "BTCUSDT", "60")
    cols = {k: v.copy() for k, v in history.columns().items()}
    i = int(rng.integers(100, len(history)))
    cols["low"][i] = max(cols["open"][i], cols["close"][i]) * 1.01
    with pytest.raises(InvalidCandlesError, match=f"index {i} .*low > min"):
        store.append(Candles(**cols), "BTCUSDT", "60")
    shifted = Candles(**{**history.columns(), "start_ms": history.start_ms + 60_000})
    with pytest.raises(InvalidCandlesError, match="not on a 60 interval boundary"):
        store.write(shifted, "BTCUSDT", "60")
    assert store.load("BTCUSDT", "60").equals(history[:100])


def test_failed_write_keeps_old_file_and_leaves_no_temp(store, history, monkeypatch):
    path = store.write(history[:500], "BTCUSDT", "60")
    real_write = pq.write_table

    def crash_half_way(table, where, **kw):
        real_write(table.slice(0, len(table) // 2), where, **kw)
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        store.append(history[500:], "BTCUSDT", "60")
    assert sorted(os.listdir(path.parent)) == [".60.parquet.lock", "60.parquet"]
    assert store.load("BTCUSDT", "60").equals(history[:500])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_killed_mid_write_keeps_old_file(store, history, monkeypatch):
    store.write(history[:300], "BTCUSDT", "60")

    def die(table, where, **kw):
        where.write(b"PAR1" + b"x" * 4096)
        where.flush()
        os._exit(9)  # no cleanup, no exception handlers: as if killed

    # A forked child starts to replace the file and dies half way (fork: a fresh interpreter would
    # spend seconds importing torch through the package).
    pid = os.fork()
    if pid == 0:
        monkeypatch.setattr(pq, "write_table", die)
        store.write(history, "BTCUSDT", "60")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    assert store.load("BTCUSDT", "60").equals(history[:300])


def test_update_fetches_only_after_last_stored(store, history, rng):
    k = int(rng.integers(200, len(history) - 200))
    store.write(history[:k], "BTCUSDT", "60")
    with FakeBybit(history) as fake, client_for(fake) as client:
        report = store.update(client, "BTCUSDT", "60")
        assert report.added == len(history) - k and report.gaps == []
        assert store.load("BTCUSDT", "60").equals(history)
        assert min(int(r["start"]) for r in fake.requests) == history.start_ms[k]
        fake.requests.clear()
        assert store.update(client, "BTCUSDT", "60").added == 0
        assert len(fake.requests) == 1
        with pytest.raises(UserError, match="nothing stored yet for ETHUSDT"):
            store.update(client, "ETHUSDT", "60")


def test_update_extends_backwards_and_reports_gaps(store, history, rng):
    holes = np.zeros(len(history), bool)
    holes[[700, 701, 702, 1200]] = True
    served = history[~holes]
    store.write(served[1000:1100], "BTCUSDT", "60")
    with FakeBybit(served) as fake, client_for(fake) as client:
        report = store.update(client, "BTCUSDT", "60", start_ms=int(history.start_ms[0]))
    assert report.candles.equals(served) and store.load("BTCUSDT", "60").equals(served)
    assert [(g.first_missing_ms, g.n_missing) for g in report.gaps] == [
        (history.start_ms[700], 3),
        (history.start_ms[1200], 1),
    ]
    assert "gap: 3 missing" in str(report)


def test_import_real_csv(store, btc_csv):
    candles = store.import_csv(btc_csv, "BTCUSDT", "60")
    assert len(candles) == 44_766 and store.load("BTCUSDT", "60").equals(Candles.from_csv(btc_csv))
    assert store.gaps("BTCUSDT", "60") == []


def test_cli_fetch_and_import(tmp_path, history, capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    csv_path = tmp_path / "c.csv"
    rows = [
        f"{int(c.start_ms)},{c.open!r},{c.high!r},{c.low!r},{c.close!r},{c.volume!r}" for c in history[:100]
    ]
    csv_path.write_text("timestamp,Open,High,Low,Close,Volume\n" + "\n".join(rows[::-1]) + "\n")
    root = tmp_path / "s"
    assert cli.run(parser.parse_args(["--store", str(root), "--import-csv", str(csv_path)])) == 0
    with FakeBybit(history) as fake:
        args = parser.parse_args(["--store", str(root), "--base-url", fake.rest_url])
        assert cli.run(args) == 0
    assert f"+{len(history) - 100} candles" in capsys.readouterr().out
    loaded = CandleStore(root).load("BTCUSDT", "60")
    np.testing.assert_array_equal(loaded.close, history.close)
    assert cli.parse_time_ms("2024-01-02 03:00", "--start") == 1704164400000
    with pytest.raises(UserError, match="--end 'yesterday'"):
        cli.parse_time_ms("yesterday", "--end")


def test_load_candles_accepts_a_store_folder_its_parquet_file_or_a_csv(store, history, tmp_path):
    path = store.write(history, "BTCUSDT", "60")
    csv = tmp_path / "bars.csv"
    rows = ["timestamp,Open,High,Low,Close,Volume"] + [
        f"{ms},{float(o)!r},{float(h)!r},{float(lo)!r},{float(c)!r},{float(v)!r}"
        for ms, o, h, lo, c, v in zip(
            history.start_ms,
            history.open,
            history.high,
            history.low,
            history.close,
            history.volume,
            strict=True,
        )
    ]
    csv.write_text("\n".join(rows) + "\n")
    for data in (store.root, path, csv):
        loaded = load_candles(data, "BTCUSDT", "60")
        np.testing.assert_array_equal(loaded.start_ms, history.start_ms)
        np.testing.assert_array_equal(loaded.close, history.close)
    with pytest.raises(UserError, match="no such CSV file"):
        load_candles(tmp_path / "missing")
    with pytest.raises(UserError, match="no candles stored"):
        load_candles(store.root, "ETHUSDT", "60")


# ---- concurrency (issue 13 item 6) --------------------------------------------------------------------

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _in_child(work) -> int:
    """Run ``work`` in a forked child (a fresh interpreter would spend seconds importing torch); its pid."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            work()
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def _exit_code(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@needs_fork
def test_two_writer_processes_lose_no_chunk(tmp_path, rng):
    candles = random_candles(rng, 600)
    chunks = [candles[k : k + 10] for k in range(0, 600, 10)]  # 60 chunks, 2 processes x 30
    order = rng.permutation(60)

    def writer(mine):
        store = CandleStore(tmp_path / "store")
        for k in mine:
            store.append(chunks[k], "BTCUSDT", "60")

    pids = [_in_child(lambda part=part: writer(order[part::2])) for part in (0, 1)]
    assert [_exit_code(pid) for pid in pids] == [0, 0]
    stored = CandleStore(tmp_path / "store").load("BTCUSDT", "60")
    present = sum(bool(np.isin(c.start_ms, stored.start_ms).all()) for c in chunks)
    assert present == 60 and stored.equals(candles)


@needs_fork
def test_kill_9_during_writes_leaves_no_temp_after_next_open(tmp_path, rng):
    import signal

    store = CandleStore(tmp_path / "store")
    big = random_candles(rng, 60_000)  # a write takes some ms, so kills land inside it
    store.write(big[:100], "BTCUSDT", "60")
    path = store.path("BTCUSDT", "60")

    def write_forever():
        while True:
            store.write(big, "BTCUSDT", "60")

    left = 0
    for _ in range(20):
        pid = _in_child(write_forever)
        time.sleep(float(rng.uniform(0.005, 0.06)))
        os.kill(pid, signal.SIGKILL)
        assert _exit_code(pid) == -signal.SIGKILL
        left = max(left, len(list(path.parent.glob(".60.parquet.*.tmp"))))
        # The next open cleans what the killed writer left, and finds a complete file.
        loaded = store.load("BTCUSDT", "60")
        assert loaded.equals(big) or loaded.equals(big[:100])
        assert list(path.parent.glob("*.tmp")) == []
    assert left >= 1, "no kill landed inside a write: the test did not test anything"


@needs_fork
def test_readers_never_see_a_partial_file(tmp_path, rng):
    store = CandleStore(tmp_path / "store")
    candles = random_candles(rng, 20_000)
    store.write(candles[:1000], "BTCUSDT", "60")

    def writer():
        for k in range(1000, 20_000, 500):
            store.append(candles[k : k + 500], "BTCUSDT", "60")

    pid = _in_child(writer)
    reads, failures = 0, []
    while not os.waitpid(pid, os.WNOHANG)[0]:
        try:
            got = store.load("BTCUSDT", "60")
            assert got.equals(candles[: len(got)])
            reads += 1
        except Exception as exc:  # counted, then reported below
            failures.append(repr(exc))
    assert failures == [] and reads >= 5


def test_a_held_lock_times_out_with_a_clear_error(tmp_path, rng):
    candles = random_candles(rng, 50)
    holder = CandleStore(tmp_path / "store")
    path = holder.write(candles[:10], "BTCUSDT", "60")
    impatient = CandleStore(tmp_path / "store", lock_timeout=0.2)
    with holder.locked(path):
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError, match=r"being written by another process .* after 0\.2 s"):
            impatient.append(candles[10:], "BTCUSDT", "60")
        assert 0.2 <= time.monotonic() - t0 < 1.0
        assert impatient.load("BTCUSDT", "60").equals(candles[:10]), "readers never wait for the lock"
    assert impatient.append(candles[10:], "BTCUSDT", "60").equals(candles)
