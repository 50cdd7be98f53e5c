"""Property: whatever a market-data endpoint answers (any status, bytes, JSON, an envelope around any
result), :class:`BybitClient`'s reads return validated data or raise a :class:`UserError` subclass
(``BybitError`` ...) that says what was wrong: never another exception type."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnext_fast.data.bybit import BybitClient, RetryPolicy
from convnext_fast.data.candles import Candles
from convnext_fast.data.funding import FundingRates, fetch_funding
from convnext_fast.errors import UserError
from tests.bybit_replies import JSON, SCALAR, playback, reply_bodies

HOUR = 3_600_000
NOW = 1_700_000_000_000 // HOUR * HOUR
TIME = st.one_of(
    st.just({"timeNano": str(NOW * 1_000_000 + 1)}),
    st.fixed_dictionaries({}, optional={"timeNano": SCALAR, "timeSecond": SCALAR}),
)
KLINE_ROW = st.one_of(
    st.lists(SCALAR, min_size=7, max_size=7),
    st.tuples(st.integers(NOW - 5 * HOUR, NOW).map(lambda t: str(t // HOUR * HOUR)), *[SCALAR] * 6).map(list),
    st.integers(NOW - 5 * HOUR, NOW).map(
        lambda t: [str(t // HOUR * HOUR), "100", "101", "99", "100.5", "3", "300"]
    ),
    JSON,
)
RESULT = st.one_of(
    JSON,
    TIME,
    st.fixed_dictionaries({"list": st.one_of(st.lists(KLINE_ROW, max_size=4), JSON)}),
    st.fixed_dictionaries({"list": st.lists(st.fixed_dictionaries({}, optional={
        "fundingRate": st.one_of(st.just("0.0001"), SCALAR),
        "fundingRateTimestamp": st.one_of(st.just(str(NOW - 8 * HOUR)), SCALAR)}), max_size=3)}),
)  # fmt: skip


@st.composite
def replies(draw):
    status = draw(st.sampled_from([200, 200, 200, 200, 400, 404, 429, 500, 503]))
    return status, draw(reply_bodies(RESULT, [10001, 10006, 10016], JSON, SCALAR)), {}


def _client(answers) -> BybitClient:
    return BybitClient(
        base_url="http://127.0.0.1:9",
        retry=RetryPolicy(max_retries=2, base_delay=0.0, max_delay=0.0),
        min_request_interval=0.0,
        shared_rate_limit=False,
        progress=False,
        transport=playback(answers),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["time", "klines", "funding"]), st.lists(replies(), min_size=1, max_size=5))
def test_property_any_market_reply_gives_data_or_a_user_error(call, answers):
    client = _client(answers)
    try:
        if call == "time":
            assert isinstance(client.server_time_ms(), int)
        elif call == "klines":
            got = client.fetch_klines("BTCUSDT", "60", NOW - 5 * HOUR, NOW, max_requests=4)
            assert isinstance(got, Candles)
        else:
            got = fetch_funding(client, "BTCUSDT", NOW - 24 * HOUR, NOW)
            assert isinstance(got, FundingRates)
    except UserError as exc:
        assert str(exc).strip()
    finally:
        client.close()


def test_well_formed_replies_give_data():
    """The property is not vacuous: good replies come back as data."""
    ok = {"retCode": 0, "retMsg": "OK"}
    time_reply = (200, json.dumps({**ok, "result": {"timeNano": str(NOW * 1_000_000)}}).encode())
    row = [str(NOW - HOUR), "100", "101", "99", "100.5", "3", "300"]
    kline_reply = (200, json.dumps({**ok, "result": {"list": [row]}}).encode())
    client = _client([(*time_reply, {}), (*kline_reply, {})])
    got = client.fetch_klines("BTCUSDT", "60", NOW - HOUR, NOW - HOUR)
    assert got.start_ms.tolist() == [NOW - HOUR] and got.close.tolist() == [100.5]
    client.close()
