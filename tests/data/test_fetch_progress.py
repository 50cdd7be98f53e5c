"""A fetch says what it is doing: pages and candles fetched with an ETA on a terminal, and every retry."""

from __future__ import annotations

import argparse
import io

import pytest

from convnext_fast.data import cli as data_cli
from convnext_fast.data.bybit import BybitClient, RetryPolicy
from tests.data.fake_bybit import FakeBybit, random_candles

FAST_RETRY = RetryPolicy(max_retries=3, base_delay=0.005, max_delay=0.02)


@pytest.fixture
def history(rng):
    return random_candles(rng, int(rng.integers(2100, 2600)))


def _client(fake, **kw) -> BybitClient:
    return BybitClient(
        fake.rest_url, fake.ws_url, timeout=2.0, retry=FAST_RETRY, min_request_interval=0.0, **kw
    )


def test_every_retry_is_reported_before_its_wait(history):
    told = []
    with FakeBybit(history) as fake, _client(fake, progress=False, on_retry=told.append) as client:
        fake.queue_fault("http", count=2, status=503)
        got = client.fetch_klines("BTCUSDT", "60", history.start_ms[0], history.start_ms[-1])
    assert got.equals(history)  # the retries repaired the fetch
    assert len(told) == 2
    assert "HTTP 503" in told[0] and "retry 1/3 in" in told[0] and "retry 2/3 in" in told[1]


def test_progress_bar_counts_pages_and_candles_and_stays(history, monkeypatch):
    screen = io.StringIO()
    import convnext_fast.data.bybit as bybit

    real_tqdm = bybit.tqdm
    monkeypatch.setattr(
        bybit, "tqdm", lambda *a, **kw: real_tqdm(*a, **{**kw, "file": screen, "mininterval": 0})
    )
    with FakeBybit(history) as fake, _client(fake, progress=True) as client:
        client.fetch_klines("BTCUSDT", "60", history.start_ms[0], history.start_ms[-1])
    text = screen.getvalue()
    last = text.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("BTCUSDT 60: 100%") and f"{len(history)} candles" in last
    assert "page/s" in last or "s/page" in last  # the rate tqdm derives its ETA from
    assert text.endswith("\n")  # left on screen once done


def test_fetch_command_says_retries_on_stderr(history, tmp_path, capsys):
    with FakeBybit(history) as fake:
        fake.queue_fault("http", count=1, status=503)
        args = argparse.Namespace(
            store=str(tmp_path / "store"), import_csv=None, start=str(int(history.start_ms[0])),
            end=str(int(history.start_ms[-1])), symbols=None, symbol="BTCUSDT", interval="60",
            category="linear", base_url=fake.rest_url, funding=False,
        )  # fmt: skip
        assert data_cli.run(args) == 0
    captured = capsys.readouterr()
    assert "HTTP 503" in captured.err and "retry 1/" in captured.err
    assert "+" in captured.out and "candles" in captured.out
