"""The kill switch at command level: ``live --orders --max-orders-per-hour N`` against the fake market and
the fake exchange. Past the cap the process flattens (reduce-only market order), commits and writes the
``order_kill`` event, and exits with one line and status 2. ``--resume`` then refuses to trade on the same
UTC day (the switch's counters are in the snapshot); ``--resume --force`` trades again, and the orders of
the last hour still count against the cap."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from pathlib import Path

from convnext_fast.cli import main
from convnext_fast.live.exchange import Credentials
from convnext_fast.live.state import LiveStore

from ..data.fake_bybit import FakeBybit
from .fake_exchange import FakeExchange
from .support import candles_until_now, use_credentials


def _push_while_running(market, candles, pushed: list, done: threading.Event) -> threading.Thread:
    """Push the candles not pushed yet (``pushed`` counts them across runs) while a run listens."""

    def run():
        deadline = time.monotonic() + 30
        while market._subscribers and time.monotonic() < deadline:  # the previous run's socket is gone
            time.sleep(0.01)
        market.wait_for_subscribers(1, timeout=30)
        while not done.is_set() and len(pushed) < len(candles):
            market.push_candle(candles[len(pushed)])
            pushed.append(1)
            time.sleep(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_orders_per_hour_kill_switch_flattens_exits_and_blocks_the_resume(tmp_path, monkeypatch, rng, capsys):
    creds = Credentials("kEy" + "".join(rng.choice(list("ABCDEFGH23456789"), 15)), "sEcReT" + "y" * 30)
    use_credentials(monkeypatch, tmp_path, creds)
    n, m, cap = 300, 400, int(rng.integers(2, 4))
    candles = candles_until_now(rng, n, m)
    with FakeBybit(candles[:n]) as market, FakeExchange(creds, guard=Decimal("0.02")) as exchange:
        argv = ["live", "--source", "ws", "--base-url", market.rest_url, "--ws-url", market.ws_url,
                "--window", "64", "--state", "s.db", "--out", "live.jsonl", "--threshold", "0",
                "--orders", "--order-qty", "0.01", "--max-position", "0.02", "--orders-url", exchange.url,
                "--max-orders-per-hour", str(cap)]  # fmt: skip
        done, pushed = threading.Event(), []
        _push_while_running(market, candles[n:], pushed, done)
        assert main(argv) == 2
        done.set()
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("convnext-fast: error: kill switch:") and "--max-orders-per-hour" in err[-1]
        kill = exchange.create_requests[-1]
        assert kill["reduceOnly"] is True and kill["orderLinkId"].endswith("-kill")
        assert len(exchange.create_requests) == cap + 1 and exchange.position == 0
        store = LiveStore("s.db")
        try:
            killed = store.events("order_kill")
            saved = store.load()
        finally:
            store.close()
        assert len(killed) == 1 and killed[0][0] == saved.last_start_ms, "committed with its candle"
        lines = [json.loads(x) for x in Path("live.jsonl").read_text().splitlines()]
        assert next(r for r in lines if r["event"] == "order_kill")["reason"] == killed[0][2]["reason"]
        assert saved.engine["scalars"]["orders"]["expected"] == "0"

        sent = len(exchange.create_requests)
        store = LiveStore("s.db")
        run_id = store.meta("order_run_id")
        store.close()
        assert all(b["orderLinkId"].startswith(f"cf{run_id}-") for b in exchange.create_requests)
        assert main([*argv, "--resume", "--run-id", "other123"]) == 2  # its orders would no longer match
        assert f"differs from {run_id}" in capsys.readouterr().err.strip().splitlines()[-1]
        assert main([*argv, "--resume"]) == 2  # the same UTC day: refused before anything is traded
        err = capsys.readouterr().err.strip().splitlines()
        assert "kill switch stopped this run today" in err[-1] and "--force" in err[-1]
        assert len(exchange.create_requests) == sent

        # --force re-arms the switch; the last hour's orders still count, so a forced restart with the
        # same cap stops again at its first order (flattening nothing: the position is already 0).
        done = threading.Event()
        _push_while_running(market, candles[n:], pushed, done)
        assert main([*argv, "--resume", "--force"]) == 2
        done.set()
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("convnext-fast: error: kill switch:") and exchange.position == 0
        assert len(exchange.create_requests) == sent, "over the cap: no order sent"
    assert exchange.duplicates() == 0 and exchange.max_abs_position <= Decimal("0.02")


def test_daily_loss_kill_switch_flattens_and_exits(tmp_path, monkeypatch, rng, capsys):
    """The day's loss (of the paper equity the orders mirror: fees and slippage of every flip) past
    ``--max-daily-loss`` flattens the exchange position reduce-only and stops with one line."""
    creds = Credentials("kEy" + "".join(rng.choice(list("ABCDEFGH23456789"), 15)), "sEcReT" + "z" * 30)
    use_credentials(monkeypatch, tmp_path, creds)
    n, m = 300, 400
    candles = candles_until_now(rng, n, m)
    with FakeBybit(candles[:n]) as market, FakeExchange(creds, guard=Decimal("0.02")) as exchange:
        argv = ["live", "--source", "ws", "--base-url", market.rest_url, "--ws-url", market.ws_url,
                "--window", "64", "--state", "s.db", "--out", "live.jsonl", "--threshold", "0",
                "--orders", "--order-qty", "0.01", "--max-position", "0.02", "--orders-url", exchange.url,
                "--taker-fee-bps", "20", "--max-daily-loss", "0.003"]  # fmt: skip
        done = threading.Event()
        _push_while_running(market, candles[n:], [], done)
        assert main(argv) == 2
        done.set()
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("convnext-fast: error: kill switch: daily loss") and "--max-daily-loss" in err[-1]
    )
    assert exchange.position == 0 and exchange.duplicates() == 0
    if exchange.create_requests[-1]["orderLinkId"].endswith("-kill"):  # a position was open: flattened
        assert exchange.create_requests[-1]["reduceOnly"] is True
    lines = [json.loads(x) for x in Path("live.jsonl").read_text().splitlines()]
    bars = [r for r in lines if r["event"] == "candle"]
    assert bars[-1]["equity"] < bars[0]["equity"] * (1 - 0.003)  # the day began at the first candle
    assert sum(r["event"] == "order_kill" for r in lines) == 1
