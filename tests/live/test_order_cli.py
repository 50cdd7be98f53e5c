"""``live --orders`` end to end: the WebSocket market of the local fake Bybit, the private fake exchange,
the real command. Orders follow the paper intent, every order event is in the JSON lines, dry-run sends
nothing signed, and no output file or stream holds a key."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from pathlib import Path

import pytest

from convnext_fast.live.exchange import Credentials

from ..data.fake_bybit import FakeBybit
from .fake_exchange import FakeExchange
from .support import candles_until_now, use_credentials


@pytest.mark.parametrize("dry_run", [False, True])
def test_live_orders_end_to_end(tmp_path, capsys, monkeypatch, rng, dry_run):
    from convnext_fast.cli import main

    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    creds = Credentials("".join(rng.choice(list(alphabet), 18)), "".join(rng.choice(list(alphabet), 36)))
    use_credentials(monkeypatch, tmp_path, creds)
    n, m = 300, 12
    candles = candles_until_now(rng, n, m)
    with FakeBybit(candles[:n]) as market, FakeExchange(creds, guard=Decimal("0.02")) as exchange:

        def market_maker():
            market.wait_for_subscribers(1, timeout=30)
            for c in candles[n:]:
                market.push_candle(c)

        threading.Thread(target=market_maker, daemon=True).start()
        argv = ["live", "--source", "ws", "--base-url", market.rest_url, "--ws-url", market.ws_url,
                "--window", "64", "--state", "s.json", "--out", "live.jsonl", "--threshold", "0",
                "--max-bars", str(m), "--orders", "--order-qty", "0.01", "--max-position", "0.02",
                "--orders-url", exchange.url, "--stop-loss", "0.02", "--take-profit", "0.03"]  # fmt: skip
        assert main(argv + (["--dry-run-orders"] if dry_run else [])) == 0
        out = capsys.readouterr()
    records = [json.loads(line) for line in Path("live.jsonl").read_text().splitlines()]
    bars = [r for r in records if r["event"] == "candle"]
    assert len(bars) == m
    kinds = {r["event"] for r in records}
    if dry_run:
        assert not exchange.create_requests and "order_dry_run" in kinds
        posts = [r for r in records if r["event"] == "order_dry_run" and r["method"] == "POST"]
        assert posts and all(r["headers"]["X-BAPI-API-KEY"] == "***" for r in posts)
    else:
        assert {"order_intent", "order_request", "order_response", "order_sent", "order_fill"} <= kinds
        assert exchange.create_requests and exchange.duplicates() == 0 and exchange.rejected_signatures == 0
        assert exchange.trading_stops, "the position is protected on the exchange"
        last = bars[-1]
        side = 1 if last["position"] > 0 else -1 if last["position"] < 0 else 0
        pending = side if last["signal"] == 0 else last["signal"]
        assert exchange.position == Decimal("0.01") * pending
        assert exchange.max_abs_position <= Decimal("0.02")
    texts = [out.out, out.err] + [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    for text in texts:  # every output stream and file
        assert creds.api_secret not in text and creds.api_key not in text
