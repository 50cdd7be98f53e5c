"""Opt-in orders: Bybit V5 signing, instrument rules, the mirror against the local fake exchange (which
verifies every signature), the position guard, the kill switch, dry-run and the CLI's refusals; keys never
leak into any output."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from decimal import Decimal
from types import SimpleNamespace

import pytest

from convnext_fast.errors import UserError
from convnext_fast.live.instruments import InstrumentRules, decimal_str
from convnext_fast.live.orders import (
    TESTNET_URL,
    BybitExchange,
    Credentials,
    KillSwitch,
    KillSwitchTripped,
    OrderError,
    OrderMirror,
    check_order_url,
    link_id,
    run_id_for,
    sign,
    signed_headers,
)

from .fake_exchange import FakeExchange
from .support import use_credentials

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


def _secrets_absent(creds: Credentials, *texts: str) -> None:
    for text in texts:
        assert creds.api_secret not in text and creds.api_key not in text


@pytest.fixture
def fake(creds):
    server = FakeExchange(creds, guard=Decimal("0.05"))
    yield server
    server.close()


def _mirror(creds, fake, events, **kwargs) -> OrderMirror:
    exchange = BybitExchange(creds, base_url=fake.url, timeout=kwargs.pop("timeout", 2.0), on_event=events.append,
                             sleep=lambda s: None)  # fmt: skip
    exchange.sync_time()
    kwargs.setdefault("max_position", 0.05)
    return OrderMirror(
        exchange, "BTCUSDT", kwargs.pop("qty", 0.01), run_id="t3st0001", emit=events.append, **kwargs
    )


def test_quantities_and_prices_are_exact_decimal_strings_on_the_step(rng):
    whole = InstrumentRules("X", Decimal(1), Decimal(1), Decimal(10**9), Decimal("0.01"))
    assert decimal_str(whole.qty(1234567)) == "1234567"  # :g made this 1.23457e+06
    fine = InstrumentRules("X", Decimal("0.00000001"), Decimal("0.00000001"), Decimal(10), Decimal("0.01"))
    assert decimal_str(fine.qty(0.00012345678)) == "0.00012345"  # rounded down to the step, never :g
    assert decimal_str(fine.qty(1e-8)) == "0.00000001"
    steps = [Decimal(s) for s in ("0.001", "0.01", "0.1", "1", "5", "0.0005")]
    for value, step in zip(
        rng.uniform(0, 5000, 300) * 10.0 ** rng.integers(-6, 3, 300), rng.choice(steps, 300), strict=True
    ):
        rules = InstrumentRules("X", step, step, Decimal(10**12), Decimal("0.5"))
        text = decimal_str(rules.qty(value))
        assert "e" not in text.lower() and Decimal(text) % step == 0
        assert 0 <= Decimal(repr(float(value))) - Decimal(text) < step
    assert whole.why_not(Decimal(0), None).startswith("quantity rounds to 0")
    small = InstrumentRules("X", Decimal("0.001"), Decimal("0.001"), Decimal(100), Decimal("0.1"), Decimal(5))
    assert "below the minimum" in small.why_not(Decimal("0.001"), Decimal(100))
    assert small.why_not(Decimal("0.1"), Decimal(100)) is None


def test_link_ids_are_deterministic_unique_per_intent_and_short():
    run = run_id_for("linear", "BTCUSDT", "60", "/tmp/state.json")
    assert run == run_id_for("linear", "BTCUSDT", "60", "/tmp/state.json") and len(run) == 8
    bar = 1_700_000_000_000
    ids = {
        link_id(run, bar + k * 3_600_000, intent) for k in range(50) for intent in ("open", "flip", "close")
    }
    assert len(ids) == 150 and max(map(len, ids)) <= 36
    assert link_id(run, bar, "open") == link_id(run, bar, "open")


def test_order_urls_must_be_https_except_loopback():
    assert check_order_url("https://api-testnet.bybit.com/") == "https://api-testnet.bybit.com"
    assert check_order_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    for bad in ("http://api.bybit.com", "http://10.0.0.2:80", "ftp://x", "api.bybit.com"):
        with pytest.raises(UserError, match="https"):
            check_order_url(bad)


def test_mirror_follows_the_paper_intent_with_protection_and_reconciliation(creds, fake, caplog):
    events = []
    with caplog.at_level("INFO"):
        mirror = _mirror(creds, fake, events, stop_loss=0.02, take_profit=0.03)
        bar = 1_700_000_000_000
        assert mirror.after_bar(bar, +1)["orderLinkId"] == link_id("t3st0001", bar, "open")
        assert mirror.after_bar(bar + 1, +1) is None  # already long
        assert mirror.after_bar(bar + 2, 0) is None  # Hold keeps the position by default
        mirror.after_bar(bar + 3_600_000, -1)  # long → short in one order of 0.02
        fake.position = Decimal("0.03")  # someone else trades the account
        mirror.after_bar(bar + 7_200_000, -1)  # back to the intended short
    creates = [(o["side"], o["qty"], o["reduceOnly"]) for o in fake.create_requests]
    assert creates == [("Buy", "0.01", False), ("Sell", "0.02", False), ("Sell", "0.04", False)]
    assert fake.position == Decimal("-0.01") and fake.rejected_signatures == 0
    stop = fake.trading_stops[0]
    assert (stop["takeProfit"], stop["stopLoss"]) == (
        "51500",
        "49000",
    )  # the backtest's distances from the fill
    assert fake.trading_stops[1]["stopLoss"] == "51000" and fake.trading_stops[1]["takeProfit"] == "48500"
    reconciles = [e for e in events if e["event"] == "order_reconcile"]
    assert (
        len(reconciles) == 1 and reconciles[0]["exchange"] == "0.03" and reconciles[0]["expected"] == "-0.01"
    )
    assert "reconcile" in caplog.text
    _secrets_absent(creds, caplog.text, json.dumps(events), repr(mirror.exchange.creds))


def test_below_minimum_is_skipped_with_a_reason_and_the_guard_caps(creds, fake, caplog):
    events = []
    mirror = _mirror(creds, fake, events, qty=0.0004)
    with caplog.at_level("WARNING"):
        assert mirror.after_bar(1_700_000_000_000, +1) is None
    assert "rounds to 0" in caplog.text and not fake.create_requests
    mirror = _mirror(creds, fake, events, qty=0.01, max_position=0.015)
    mirror.after_bar(1_700_000_000_000, +1, pending_size=7.0)  # Kelly may ask for more than the guard
    assert fake.position == Decimal("0.015")
    mirror.after_bar(1_700_003_600_000, -1, pending_size=7.0)
    assert fake.position == Decimal("-0.015") and fake.max_abs_position <= Decimal("0.015")


def test_retcode_10002_resyncs_once_and_10006_waits_for_the_reset(creds, fake):
    events = []
    mirror = _mirror(creds, fake, events)
    slept = []
    mirror.exchange._sleep = slept.append
    fake.faults += ["stale_clock", "rate_limit"]
    mirror.after_bar(1_700_000_000_000, +1)
    assert fake.position == Decimal("0.01") and len(fake.create_requests) == 3
    assert mirror.exchange.offset_ms > 170_000, "the server clock was read again"
    assert len(slept) == 1 and 0 <= slept[0] <= 0.5


@pytest.mark.parametrize(
    "fault", ["timeout_after_fill", "disconnect_after_fill", "http_500_after_fill", "non_object"]
)
def test_an_ambiguous_reply_is_looked_up_and_never_resent(creds, fake, fault):
    events = []
    mirror = _mirror(creds, fake, events, timeout=0.1)
    fake.faults.append(fault)
    order = mirror.after_bar(1_700_000_000_000, +1)
    assert order is not None and order["orderStatus"] == "Filled"
    assert len(fake.create_requests) == 1 and fake.position == Decimal("0.01")
    assert [e["how"] for e in events if e["event"] == "order_sent"] == ["found"]
    assert mirror.after_bar(1_700_000_000_000, +1) is None  # the same bar again: nothing to do
    fresh = _mirror(creds, fake, [], timeout=0.1)  # a restarted run re-derives the same link id
    fake.position = Decimal(0)
    fresh._send(1_700_000_000_000, "open", Decimal(0), Decimal("0.01"), None)
    assert fake.duplicates() == 0 and fake.position == Decimal(0), "the exchange refused the duplicate id"


def test_fault_storm_never_duplicates_never_exceeds_the_guard(creds, rng):
    """>= 100 faults of every kind over random decisions: 0 duplicates, |position| <= guard, quantities on
    the step. The fake does not refuse a repeated orderLinkId here, so a resend would execute twice."""
    from .fake_exchange import run_fault_storm

    row = run_fault_storm(creds, rng, n_bars=300, fault_rate=0.9, min_faults=100)
    assert row["faults"] >= 100
    assert row["duplicates"] == 0 and row["bad_qty"] == 0 and row["rejected_signatures"] == 0
    assert row["max_abs_position"] <= row["guard"]
    assert row["resent_after_ambiguous"] == 0


def test_kill_switch_flattens_and_stops(creds, fake, caplog):
    events = []
    mirror = _mirror(creds, fake, events, kill_switch=KillSwitch(max_orders_per_hour=2))
    bar = 1_700_000_000_000
    mirror.after_bar(bar, +1)
    mirror.after_bar(bar + 3_600_000, -1)
    with pytest.raises(KillSwitchTripped, match="max-orders-per-hour"):
        mirror.after_bar(bar + 7_200_000, +1)
    assert fake.position == 0 and fake.create_requests[-1]["reduceOnly"] is True
    mirror = _mirror(creds, fake, events, kill_switch=KillSwitch(max_daily_loss=0.05))
    bar += 100 * 3_600_000  # new bars: the same bar's intents would (rightly) be refused as duplicates
    mirror.after_bar(bar, +1, equity=10_000.0)
    assert fake.position == Decimal("0.01")
    mirror.after_bar(bar + 3_600_000, +1, equity=9_600.0)  # a 4 % loss is inside the limit
    with pytest.raises(KillSwitchTripped, match="daily loss"):
        mirror.after_bar(bar + 7_200_000, +1, equity=9_400.0)
    assert fake.position == 0
    assert sum(e["event"] == "order_kill" for e in events) == 2


def test_dry_run_prints_signed_requests_and_sends_nothing(creds, fake):
    events = []
    mirror = _mirror(creds, fake, events)
    mirror.exchange.dry_run = True
    before = fake.requests
    mirror.after_bar(1_700_000_000_000, +1)
    mirror.after_bar(1_700_003_600_000, -1)
    assert fake.requests == before and not fake.create_requests
    dry = [e for e in events if e["event"] == "order_dry_run"]
    posts = [json.loads(e["body"]) for e in dry if e["method"] == "POST"]
    assert [(p["side"], p["qty"]) for p in posts] == [("Buy", "0.01"), ("Sell", "0.02")]
    for e in dry:  # the printed signature is the one the exchange would verify
        payload = e["body"] if e["method"] == "POST" else e["url"].split("?", 1)[1]
        h = e["headers"]
        assert h["X-BAPI-SIGN"] == sign(creds.api_secret, int(h["X-BAPI-TIMESTAMP"]), creds.api_key,
                                        int(h["X-BAPI-RECV-WINDOW"]), payload)  # fmt: skip
    _secrets_absent(creds, json.dumps(events))


def test_a_wrong_secret_is_refused_by_the_server(creds, fake):
    wrong = Credentials(creds.api_key, creds.api_secret[::-1])
    exchange = BybitExchange(wrong, base_url=fake.url)
    with pytest.raises(OrderError, match="error sign"):
        exchange.position("BTCUSDT")
    assert fake.rejected_signatures == 1
    exchange.close()


def test_credentials_only_from_env_and_testnet_by_default(creds):
    with pytest.raises(UserError, match="BYBIT_API_SECRET"):
        Credentials.from_env({"BYBIT_API_KEY": "abc"})
    got = Credentials.from_env({"BYBIT_API_KEY": creds.api_key, "BYBIT_API_SECRET": creds.api_secret})
    assert got == creds
    exchange = BybitExchange(got)
    assert exchange.base_url == TESTNET_URL
    exchange.close()


@pytest.mark.parametrize("source", ["replay", "synthetic", "auto"])
def test_orders_with_a_replayed_or_synthetic_market_are_refused_before_any_request(
    creds, fake, capsys, monkeypatch, tmp_path, source
):
    from convnext_fast.cli import main

    use_credentials(monkeypatch, tmp_path, creds)
    argv = ["live", "--source", source, "--data", "nowhere.csv", "--orders", "--order-qty", "0.01",
            "--max-position", "0.01", "--orders-url", fake.url]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--source ws or rest" in err
    assert fake.requests == 0
    argv = ["live", "--source", "ws", "--orders", "--order-qty", "0.01", "--max-position", "0.01",
            "--orders-url", "http://example.com"]  # fmt: skip
    assert main(argv) == 2
    assert "https" in capsys.readouterr().err and fake.requests == 0


def test_the_live_hook_mirrors_a_paper_broker_and_writes_events(creds, fake, rng):
    from convnext_fast.live.order_cli import OrderHook
    from convnext_fast.trading.broker import PaperBroker

    broker = PaperBroker()
    hook = OrderHook(_mirror(creds, fake, []))
    lines: list[dict] = []
    engine = SimpleNamespace(broker=broker, last_start_ms=None)
    price, held = 50_000.0, []
    for k in range(40):
        step = price * (1 + rng.normal(0, 0.003))
        o, c = price, step
        broker.on_bar(o, max(o, c) * 1.001, min(o, c) * 0.999, c, int(rng.choice([-1, 0, 1])), 1.0)
        engine.last_start_ms = 1_700_000_000_000 + k * 3_600_000
        lines += [{"event": kind, **payload} for kind, payload in hook(engine)]
        held.append((broker.pending_signal, fake.position))
        price = step
    for pending, position in held:  # the exchange holds what the broker will hold from the next open
        if pending:
            assert position == Decimal("0.01") * pending
    assert any(e["event"] == "order_intent" for e in lines) and fake.duplicates() == 0
    _secrets_absent(creds, json.dumps(lines))


def test_post_only_limit_orders_rest_at_the_touch_and_pay_maker(creds, fake):
    events = []
    mirror = _mirror(creds, fake, events, order_type="limit", post_only=True)
    mirror.after_bar(1_700_000_000_000, +1)
    mirror.after_bar(1_700_003_600_000, -1)
    buy, sell = fake.create_requests
    assert (buy["orderType"], buy["timeInForce"], buy["price"]) == (
        "Limit",
        "PostOnly",
        "49999.9",
    )  # best bid
    assert (sell["side"], sell["price"]) == ("Sell", "50000.1")  # best ask: both on the maker side
    for body in (buy, sell):
        assert Decimal(body["price"]) % fake.tick == 0
    with pytest.raises(UserError, match="post-only needs"):
        _mirror(creds, fake, [], post_only=True)


def test_a_crash_between_fill_and_trading_stop_is_protected_on_recover(creds, fake, caplog):
    """The order fills, the trading-stop call never reaches the exchange (the process dies there); a new
    mirror resumed from the state committed before that bar attaches the protection in ``recover``."""
    events = []
    first = _mirror(creds, fake, events, stop_loss=0.02, take_profit=0.03)
    committed = first.state()  # the last state committed before the bar whose order filled
    bar = 1_700_000_000_000
    fake.drop_trading_stops = 1  # the trading-stop is lost: as if the process were killed before it
    assert first.after_bar(bar, +1)["orderLinkId"] == link_id("t3st0001", bar, "open")
    assert fake.position == Decimal("0.01") and not fake.trading_stops
    assert (fake.take_profit, fake.stop_loss) == ("", "")  # exchange position unprotected
    first.exchange.close()
    del first  # the process died: its state after the fill was never committed

    resumed = _mirror(creds, fake, events, stop_loss=0.02, take_profit=0.03)
    resumed.set_state(committed)
    with caplog.at_level("WARNING"):
        assert resumed.recover(bar) == [link_id("t3st0001", bar, "open")]
    assert "has no take_profit/stop_loss" in caplog.text
    # The backtest's distances from avgPrice 50000 on the 0.1 tick grid, as Decimal strings.
    assert (fake.take_profit, fake.stop_loss) == ("51500", "49000")
    assert len(fake.trading_stops) == 1 and fake.trading_stops[0]["tpslMode"] == "Full"
    assert [e["event"] for e in events].count("order_unprotected") == 1
    # The replayed bar sends no second order and no second trading-stop.
    assert resumed.after_bar(bar, +1) is None
    assert len(fake.create_requests) == 1 and len(fake.trading_stops) == 1 and fake.duplicates() == 0


def test_a_lost_trading_stop_is_reattached_at_the_next_reconcile_off_grid_price(creds, fake):
    """The process lives on after a trading-stop it never heard back from: the next bar's reconcile finds
    the position unprotected and attaches it from avgPrice, rounded onto the tick grid."""
    fake.price = Decimal("50000.3")
    mirror = _mirror(creds, fake, [], stop_loss=0.015, take_profit=0.025)
    bar = 1_700_000_000_000
    fake.drop_trading_stops = 1
    mirror.after_bar(bar, +1)
    assert not fake.trading_stops and fake.position == Decimal("0.01")
    mirror.after_bar(bar + 3_600_000, +1)  # holding: no order, but the protection comes back
    assert len(fake.create_requests) == 1 and len(fake.trading_stops) == 1
    # 50000.3 × 1.025 = 51250.3075 → 51250.4 (away from entry); × 0.985 = 49250.2955 → 49250.3 (toward it).
    assert (fake.take_profit, fake.stop_loss) == ("51250.4", "49250.3")
    assert Decimal(fake.take_profit) % fake.tick == 0 and Decimal(fake.stop_loss) % fake.tick == 0


def test_an_already_protected_position_is_not_sent_a_trading_stop_again(creds, fake):
    mirror = _mirror(creds, fake, [], stop_loss=0.02, take_profit=0.03)
    bar = 1_700_000_000_000
    mirror.after_bar(bar, +1)
    assert len(fake.trading_stops) == 1 and (fake.take_profit, fake.stop_loss) == ("51500", "49000")
    for k in range(1, 4):  # holding bars: reconciled each time, protection already there
        assert mirror.after_bar(bar + k * 3_600_000, +1) is None
    resumed = _mirror(creds, fake, [], stop_loss=0.02, take_profit=0.03)
    resumed.set_state(mirror.state())
    resumed.recover(bar + 4 * 3_600_000)
    assert resumed.after_bar(bar + 4 * 3_600_000, +1) is None
    assert len(fake.trading_stops) == 1 and len(fake.create_requests) == 1
    # Without stop-loss/take-profit rules nothing is attached on recover either.
    fake.take_profit = fake.stop_loss = ""
    _mirror(creds, fake, []).recover(bar + 5 * 3_600_000)
    assert len(fake.trading_stops) == 1
