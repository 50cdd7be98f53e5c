"""Opt-in orders: Bybit V5 signing, a local fake private API that verifies it, the position guard, and
keys that never leak into logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from convnext_fast.errors import UserError
from convnext_fast.live.orders import (
    TESTNET_URL,
    BybitOrders,
    Credentials,
    OrderError,
    OrderMirror,
    sign,
    signed_headers,
)

# The parameters of the GET example in Bybit's V5 authentication guide.
DOC_TIMESTAMP, DOC_RECV_WINDOW, DOC_QUERY = 1658384314791, 5000, "category=option&symbol=BTC-29JUL22-25000-C"


@pytest.fixture
def creds(rng) -> Credentials:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
    draw = lambda n: "".join(rng.choice(list(alphabet), n))  # noqa: E731
    return Credentials(draw(18), draw(36))


def test_signature_follows_the_v5_rule_and_matches_openssl(creds):
    expected = hmac.new(
        creds.api_secret.encode(),
        f"{DOC_TIMESTAMP}{creds.api_key}{DOC_RECV_WINDOW}{DOC_QUERY}".encode(),
        hashlib.sha256,
    ).hexdigest()
    got = sign(creds.api_secret, DOC_TIMESTAMP, creds.api_key, DOC_RECV_WINDOW, DOC_QUERY)
    assert got == expected and len(got) == 64 and got == got.lower()
    if shutil.which("openssl"):  # an independent HMAC implementation
        out = subprocess.run(
            ["openssl", "dgst", "-sha256", "-hmac", creds.api_secret],
            input=f"{DOC_TIMESTAMP}{creds.api_key}{DOC_RECV_WINDOW}{DOC_QUERY}".encode(),
            capture_output=True,
            check=True,
        )
        assert out.stdout.decode().strip().split()[-1] == got
    # Every part of the message matters.
    assert sign(creds.api_secret, DOC_TIMESTAMP + 1, creds.api_key, DOC_RECV_WINDOW, DOC_QUERY) != got
    assert sign(creds.api_secret, DOC_TIMESTAMP, creds.api_key, DOC_RECV_WINDOW, DOC_QUERY + "&x=1") != got
    headers = signed_headers(creds, DOC_QUERY, timestamp_ms=DOC_TIMESTAMP, recv_window_ms=DOC_RECV_WINDOW)
    assert headers == {
        "X-BAPI-API-KEY": creds.api_key,
        "X-BAPI-TIMESTAMP": str(DOC_TIMESTAMP),
        "X-BAPI-RECV-WINDOW": str(DOC_RECV_WINDOW),
        "X-BAPI-SIGN": got,
    }


class FakePrivateBybit:
    """Bybit V5 private endpoints on 127.0.0.1 that check every signature like the exchange does."""

    def __init__(self, creds: Credentials, position: float = 0.0):
        self.creds, self.position, self.orders, self.rejected = creds, position, [], 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _verify(self, payload: str) -> bool:
                h = self.headers
                want = sign(
                    fake.creds.api_secret,
                    int(h["X-BAPI-TIMESTAMP"]),
                    fake.creds.api_key,
                    int(h["X-BAPI-RECV-WINDOW"]),
                    payload,
                )
                ok = h["X-BAPI-API-KEY"] == fake.creds.api_key and hmac.compare_digest(h["X-BAPI-SIGN"], want)
                fake.rejected += not ok
                return ok

            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                if not self._verify(url.query):
                    return self._reply({"retCode": 10004, "retMsg": "error sign!"})
                side = "Buy" if fake.position > 0 else "Sell" if fake.position < 0 else ""
                rows = [{"symbol": "BTCUSDT", "side": side, "size": str(abs(fake.position))}]
                self._reply({"retCode": 0, "retMsg": "OK", "result": {"list": rows}})

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                if not self._verify(body):
                    return self._reply({"retCode": 10004, "retMsg": "error sign!"})
                order = json.loads(body)
                fake.orders.append(order)
                fake.position += float(order["qty"]) * (1 if order["side"] == "Buy" else -1)
                self._reply({"retCode": 0, "retMsg": "OK", "result": {"orderId": f"id{len(fake.orders)}"}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake(creds):
    server = FakePrivateBybit(creds)
    yield server
    server.close()


def test_orders_are_signed_guarded_and_mirror_the_paper_intent(creds, fake, caplog):
    orders = BybitOrders(creds, max_position_qty=0.01, base_url=fake.url)
    with caplog.at_level("DEBUG"):
        mirror = OrderMirror(orders, "BTCUSDT", 0.01)
        assert mirror.after_bar(+1)["orderId"] == "id1"  # flat → long
        assert mirror.after_bar(+1) is None  # already long
        assert mirror.after_bar(0) is None  # Hold keeps the position by default
        mirror.after_bar(-1)  # long → short in one order of 0.02
    assert fake.rejected == 0
    assert [(o["side"], o["qty"], o["orderType"], o["category"]) for o in fake.orders] == [
        ("Buy", "0.01", "Market", "linear"),
        ("Sell", "0.02", "Market", "linear"),
    ]
    assert fake.position == pytest.approx(-0.01) and orders.position_qty("BTCUSDT") == pytest.approx(-0.01)
    with pytest.raises(OrderError, match="position guard"):
        orders.market_order("BTCUSDT", -0.005, current_qty=-0.01)
    assert len(fake.orders) == 2, "a guarded order is never sent"
    assert creds.api_secret not in caplog.text and creds.api_key not in caplog.text
    assert creds.api_secret not in repr(creds) and creds.api_key not in repr(orders.creds)
    orders.close()


def test_a_wrong_secret_is_refused_by_the_server(creds, fake):
    wrong = Credentials(creds.api_key, creds.api_secret[::-1])
    orders = BybitOrders(wrong, max_position_qty=1.0, base_url=fake.url)
    with pytest.raises(OrderError, match="error sign"):
        orders.position_qty("BTCUSDT")
    assert fake.rejected == 1
    orders.close()


def test_credentials_only_from_env_and_testnet_by_default(creds):
    with pytest.raises(UserError, match="BYBIT_API_SECRET"):
        Credentials.from_env({"BYBIT_API_KEY": "abc"})
    got = Credentials.from_env({"BYBIT_API_KEY": creds.api_key, "BYBIT_API_SECRET": creds.api_secret})
    assert got == creds
    orders = BybitOrders(got, max_position_qty=1.0)
    assert orders.base_url == TESTNET_URL
    orders.close()
    with pytest.raises(UserError, match="max-position"):
        BybitOrders(got, max_position_qty=0)


def test_live_command_mirrors_paper_decisions_to_the_exchange(
    creds, fake, capsys, monkeypatch, tmp_path, rng
):
    from convnext_fast.cli import main

    from .support import write_checkpoint

    monkeypatch.chdir(tmp_path)
    from convnext_fast.data.synthetic import synthetic_candles

    write_checkpoint(tmp_path / "model.safetensors", rng, fit_on=synthetic_candles(400, seed=0))
    monkeypatch.setenv("BYBIT_API_KEY", creds.api_key)
    monkeypatch.setenv("BYBIT_API_SECRET", creds.api_secret)
    argv = ["live", "--source", "synthetic", "--checkpoint", "model.safetensors", "--bars", "400",
            "--threshold", "0", "--max-bars", "80", "--orders", "--order-qty", "0.01", "--max-position", "0.01",
            "--orders-url", fake.url]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr()
    records = [json.loads(line) for line in out.out.splitlines()]
    calls = [r["signal"] for r in records if r["event"] == "candle" and r["signal"] != 0]
    sides = [
        s for i, s in enumerate(calls) if i == 0 or s != calls[i - 1]
    ]  # each change of side is one order
    assert len(sides) >= 2, "the run should flip at least once to exercise the mirror"
    assert fake.rejected == 0 and len(fake.orders) == len(sides)
    assert fake.position == pytest.approx(0.01 * sides[-1])
    assert [o["side"] for o in fake.orders] == ["Buy" if s > 0 else "Sell" for s in sides]
    for text in (out.out, out.err):
        assert creds.api_secret not in text and creds.api_key not in text
