"""Property: ``parse_funding_page`` turns any reply into settlements or a UserError, never another exception
(the live funding schedule retries after a UserError; anything else would end the loop)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convnext_fast.data.funding import FundingRates, parse_funding_page
from convnext_fast.errors import UserError
from tests.bybit_replies import JSON, NUMBER_SPELLINGS, SCALAR

ROW = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.just("BTCUSDT"),
        "fundingRateTimestamp": st.one_of(st.integers(0, 2**64).map(str), SCALAR),
        "fundingRate": st.one_of(st.floats(-0.2, 0.2).map(repr), SCALAR),
    },
)
BODY = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"retCode": st.just(0), "result": st.fixed_dictionaries({"list": st.lists(ROW, max_size=5)})}
    ),
    st.fixed_dictionaries({"retCode": st.just(0), "result": JSON}),
)


@settings(max_examples=300, deadline=None)
@given(BODY)
def test_property_any_funding_reply_gives_settlements_or_a_user_error(body):
    try:
        rates, rows = parse_funding_page(body)
    except UserError as exc:
        assert str(exc).strip()
        return
    assert isinstance(rates, FundingRates) and rows == len(body["result"]["list"]) >= len(rates)
    assert np.all(np.diff(rates.time_ms) > 0) and np.all(rates.time_ms >= 0)
    assert np.isfinite(rates.rate).all() and np.all(np.abs(rates.rate) <= 0.1)


def test_a_well_formed_page_parses():
    body = {"retCode": 0, "result": {"list": [
        {"symbol": "BTCUSDT", "fundingRate": "0.0001", "fundingRateTimestamp": "1700028800000"},
        {"symbol": "BTCUSDT", "fundingRate": "-0.00005", "fundingRateTimestamp": "1700000000000"},
    ]}}  # fmt: skip
    rates, rows = parse_funding_page(body)
    assert rows == 2 and rates.time_ms.tolist() == [1700000000000, 1700028800000]
    assert rates.rate.tolist() == [-0.00005, 0.0001]


@pytest.mark.parametrize("field", ["fundingRateTimestamp", "fundingRate"])
def test_every_number_spelling_is_parsed_or_refused(field):
    """Each spelling, not only the ones the property draws: "²" and a timestamp past int64 crashed once."""
    good = {"symbol": "BTCUSDT", "fundingRate": "0.0001", "fundingRateTimestamp": "1700000000000"}
    for text in NUMBER_SPELLINGS:
        try:
            rates, _ = parse_funding_page({"retCode": 0, "result": {"list": [{**good, field: text}]}})
        except UserError:
            continue
        assert len(rates) == 1 and np.isfinite(rates.rate).all(), (field, text)
