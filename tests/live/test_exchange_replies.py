"""Property: whatever Bybit's REST endpoints answer (any status, any bytes, any JSON, a well-formed envelope
around any result), each :class:`BybitExchange` call returns what it documents or raises a
:class:`UserError` (``OrderError``, ``AmbiguousReply``) that says what was wrong: never another exception,
which would end the live loop with a traceback instead of the reconcile-and-continue path."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnext_fast.errors import UserError
from convnext_fast.live.exchange import BybitExchange, Credentials, Position
from convnext_fast.live.instruments import InstrumentRules
from tests.bybit_replies import JSON, NUMBER_SPELLINGS, NUMBERISH, SCALAR, playback, reply_bodies

CREDS = Credentials("fakeKEYfakeKEY1234", "fakeSECRETfakeSECRETfakeSECRET123456")
SYMBOL = "BTCUSDT"


def _row(keys):
    """A dict with the endpoint's own keys, each holding something drawn (often a number-like string)."""
    return st.fixed_dictionaries({}, optional={k: st.one_of(NUMBERISH, SCALAR, JSON) for k in keys})


INSTRUMENT = st.fixed_dictionaries(
    {"symbol": st.just(SYMBOL)},
    optional={
        "lotSizeFilter": st.one_of(_row(["qtyStep", "basePrecision", "maxOrderQty", "maxMktOrderQty",
                                         "minOrderQty", "minNotionalValue"]), JSON),
        "priceFilter": st.one_of(_row(["tickSize"]), JSON),
    },
)  # fmt: skip
RESULTS = st.one_of(
    JSON,
    st.fixed_dictionaries({}, optional={"timeNano": st.one_of(NUMBERISH, SCALAR), "timeSecond": SCALAR}),
    st.fixed_dictionaries({"list": st.one_of(st.lists(INSTRUMENT, max_size=2), JSON)}),
    st.fixed_dictionaries({}, optional={"b": JSON, "a": JSON}),
    st.fixed_dictionaries({"b": st.just([["100.5", "1"]]), "a": st.lists(st.lists(NUMBERISH, max_size=2), max_size=2)}),
    st.fixed_dictionaries(
        {"list": st.one_of(st.lists(_row(["symbol", "side", "size", "avgPrice", "takeProfit", "stopLoss",
                                          "orderLinkId", "orderStatus", "cumExecQty"]), max_size=3), JSON)}
    ),
)  # fmt: skip


@st.composite
def replies(draw):
    """(status, body bytes, headers) of one HTTP reply."""
    status = draw(st.sampled_from([200, 200, 200, 200, 400, 403, 404, 429, 500, 503]))
    body = draw(reply_bodies(RESULTS, [10002, 10006, 110001], JSON, st.one_of(NUMBERISH, SCALAR)))
    headers = {}
    if draw(st.booleans()):
        ascii_text = st.text(
            st.characters(min_codepoint=32, max_codepoint=126), max_size=6
        )  # what HTTP carries
        headers["X-Bapi-Limit-Reset-Timestamp"] = draw(st.one_of(NUMBERISH.filter(str.isascii), ascii_text))
    return status, body, headers


CALLS = ("sync_time", "instrument", "best_bid_ask", "position", "query_order", "create_order")


def _exchange(answers) -> BybitExchange:
    return BybitExchange(
        CREDS, base_url="http://127.0.0.1:9", sleep=lambda s: None, transport=playback(answers)
    )


def _check(call: str, exchange: BybitExchange) -> None:
    if call == "sync_time":
        assert isinstance(exchange.sync_time(), int)
    elif call == "instrument":
        rules = exchange.instrument(SYMBOL)
        assert isinstance(rules, InstrumentRules) and rules.qty_step > 0 and rules.tick_size > 0
        assert all(v.is_finite() for v in (rules.qty_step, rules.min_qty, rules.max_qty, rules.tick_size))
    elif call == "best_bid_ask":
        bid, ask = exchange.best_bid_ask(SYMBOL)
        assert all(isinstance(p, Decimal) and p.is_finite() and p > 0 for p in (bid, ask)), (bid, ask)
    elif call == "position":
        pos = exchange.position(SYMBOL)
        assert isinstance(pos, Position) and pos.qty.is_finite()
        assert pos.avg_price is None or (pos.avg_price.is_finite() and pos.avg_price > 0)
    elif call == "query_order":
        order = exchange.query_order(SYMBOL, "cfX-1-open")
        assert order is None or isinstance(order, dict)
    else:
        body = {"category": "linear", "symbol": SYMBOL, "side": "Buy", "orderType": "Market", "qty": "0.01",
                "orderLinkId": "cfX-1-open"}  # fmt: skip
        order, how = exchange.create_order(body)
        assert how in ("sent", "found", "lost") and (order is None or isinstance(order, dict))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CALLS), st.lists(replies(), min_size=1, max_size=4))
def test_property_any_reply_gives_a_result_or_a_user_error(call, answers):
    exchange = _exchange(answers)
    try:
        _check(call, exchange)
    except UserError as exc:
        assert str(exc).strip(), "an error must say what went wrong"
    finally:
        exchange.close()


def test_well_formed_replies_pass_every_check():
    """The property above is not vacuous: a well-formed reply to each call passes its checks."""
    ok = {"retCode": 0, "retMsg": "OK"}
    good = {
        "sync_time": {"timeNano": "1700000000123456789"},
        "instrument": {"list": [{"symbol": SYMBOL, "lotSizeFilter": {"qtyStep": "0.001", "maxOrderQty": "100",
                                  "minOrderQty": "0.001"}, "priceFilter": {"tickSize": "0.1"}}]},
        "best_bid_ask": {"b": [["100.5", "1"]], "a": [["100.6", "2"]]},
        "position": {"list": [{"symbol": SYMBOL, "side": "Buy", "size": "0.01", "avgPrice": "100"}]},
        "query_order": {"list": [{"orderLinkId": "cfX-1-open"}]},
        "create_order": {"orderId": "1", "orderLinkId": "cfX-1-open"},
    }  # fmt: skip
    for call, result in good.items():
        exchange = _exchange([(200, json.dumps({**ok, "result": result}).encode(), {})])
        _check(call, exchange)
        exchange.close()


def test_every_number_spelling_in_the_clock_and_the_book_is_read_or_refused():
    """Each spelling, not only the ones the property draws: a timeNano of ":" crashed ``sync_time`` once."""
    ok = {"retCode": 0, "retMsg": "OK"}
    for text in NUMBER_SPELLINGS:
        for call, result in (
            ("sync_time", {"timeNano": text}),
            ("best_bid_ask", {"b": [[text, "1"]], "a": [["100.6", "2"]]}),
        ):
            exchange = _exchange([(200, json.dumps({**ok, "result": result}).encode(), {})] * 3)
            try:
                _check(call, exchange)
            except UserError as exc:
                assert str(exc).strip()
            finally:
                exchange.close()
