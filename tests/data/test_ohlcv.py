"""The one OHLCV validator: its rule, its wording everywhere it is used, and property tests (hypothesis) that
no input makes the validator or the kline/CSV parsers raise anything but the project's own error."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnext_fast.data.bybit import _parse_kline_list
from convnext_fast.data.bybit_ws import _parse_ws_kline
from convnext_fast.data.candles import INTERVALS, Candle, Candles, InvalidCandlesError, next_start_ms
from convnext_fast.data.ohlcv import EARLIEST_MS, MAX_PRICE, bar_problem, check_ohlcv, jump_problem
from convnext_fast.data.store import CandleStore
from convnext_fast.errors import UserError
from convnext_fast.live.loop import candle_problem
from convnext_fast.trading.backtest import run_backtest
from tests.bybit_replies import JSON, NUMBER_SPELLINGS, SCALAR
from tests.data.fake_bybit import kline_row, random_candles

HOUR = 3_600_000
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _broken(c: Candles, i: int, **changes) -> Candles:
    cols = {k: v.copy() for k, v in c.columns().items()}
    for name, value in changes.items():
        cols[name][i] = value
    return Candles(**cols)


BREAKAGES = [
    ({"close": np.nan}, "non-finite close", "close has NaN/Inf"),
    ({"open": np.inf}, "non-finite open", "open has NaN/Inf"),
    ({"volume": -np.inf}, "non-finite volume", "volume has NaN/Inf"),
    ({"low": 0.0}, "non-positive low", "low must be > 0"),
    ({"low": -3.0}, "non-positive low", "low must be > 0"),
    ({"high": 1e50}, "implausible high", "above 1e+09"),
    ({"high": 1.0}, "inconsistent bar", "high < max(open, close)"),
    ({"low": 1e6}, "inconsistent bar", "low > min(open, close)"),
    ({"volume": -1.0}, "negative volume", "volume must be >= 0"),
    ({"turnover": -5.0}, "negative turnover", "turnover must be >= 0"),
    ({"start_ms": 0}, "start out of range", "1970-01-01"),
    ({"start_ms": 10**18}, "start out of range", "epoch ms"),
    ({"start_ms": 1}, "start out of range", "are the times in epoch ms"),
]


@pytest.mark.parametrize(("change", "kind", "detail"), BREAKAGES)
def test_each_problem_names_kind_row_time_and_detail(rng, change, kind, detail):
    c = random_candles(rng, 200)
    c.validate("60")
    i = int(rng.integers(1, 199))
    if "start_ms" in change:  # starts must stay increasing
        i = 0 if change["start_ms"] < c.start_ms[0] else 199
    with pytest.raises(InvalidCandlesError) as err:
        _broken(c, i, **change).validate("60")
    message = str(err.value)
    assert message.startswith(f"{kind} at index {i} ("), message
    assert detail in message and "(1 bad rows in all)" in message and "\n" not in message


def test_misaligned_and_future_starts(rng):
    c = random_candles(rng, 50)
    shifted = Candles(**{**c.columns(), "start_ms": c.start_ms + 1})  # off by 1 ms, as in issue 13
    with pytest.raises(
        InvalidCandlesError, match=r"misaligned start at index 0 .*not on a 60 interval boundary"
    ):
        shifted.validate("60")
    shifted.validate()  # without an interval only the range is checked
    now = int(c.start_ms[-1])
    with pytest.raises(InvalidCandlesError, match="start out of range at index"):
        Candles(**{**c.columns(), "start_ms": c.start_ms + 2 * 86_400_000}).validate(now_ms=now)
    first_of_month = int(dt.datetime(2024, 3, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert bar_problem(1, 2, 0.5, 1.5, 1, start_ms=first_of_month, interval="M") is None
    mid_month = first_of_month + 86_400_000
    assert "misaligned start" in bar_problem(1, 2, 0.5, 1.5, 1, start_ms=mid_month, interval="M")
    assert bar_problem(1, 2, 0.5, 1.5, 1, start_ms=mid_month, interval="W") is None  # whole days


def test_counts_every_bad_row_and_reports_the_first(rng):
    c = random_candles(rng, 300)
    rows = np.sort(rng.choice(300, size=7, replace=False))
    cols = {k: v.copy() for k, v in c.columns().items()}
    cols["volume"][rows] = -1.0
    with pytest.raises(InvalidCandlesError, match=rf"at index {rows[0]} .*\(7 bad rows in all\)"):
        Candles(**cols).validate()


def test_the_same_words_from_every_user(rng, tmp_path):
    """CSV import, the store, the backtest, the live loop and the WebSocket parser all say it alike."""
    c = random_candles(rng, 40)
    i = int(rng.integers(1, 39))
    bad = _broken(c, i, high=float(c.low[i]) * 0.5)  # high < low
    expected = "inconsistent bar"
    detail = "high/low do not bracket open/close (high < max(open, close))"

    path = tmp_path / "bad.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"{r.start_ms},{r.open!r},{r.high!r},{r.low!r},{r.close!r},{r.volume!r}\n" for r in bad)
    )
    messages = []
    for action in (
        lambda: Candles.from_csv(path),
        lambda: CandleStore(tmp_path / "store").write(bad, "BTCUSDT", "60"),
        lambda: run_backtest(bad.open, bad.high, bad.low, bad.close, np.zeros(len(bad))),
    ):
        with pytest.raises(InvalidCandlesError) as err:
            action()
        messages.append(str(err.value))
    assert all(f"{expected} at index {i}" in m and detail in m for m in messages), messages
    assert candle_problem(bad[i]) == f"{expected}: {detail}"
    item = {
        "start": int(bad.start_ms[i]),
        **{k: str(getattr(bad[i], k)) for k in ("open", "high", "low", "close", "volume")},
        "turnover": "1",
        "confirm": True,
    }
    assert _parse_ws_kline(item, "60") == (None, f"{expected}: {detail}")
    body = {"retCode": 0, "result": {"list": [kline_row(bad[i])]}}
    params = {"start": int(bad.start_ms[0]), "end": int(bad.start_ms[-1])}
    with pytest.raises(InvalidCandlesError, match=f"{expected} at index 0 .*high < max"):
        _parse_kline_list(body, params, "60", int(bad.start_ms[-1]))


# ---- properties ---------------------------------------------------------------------------------------

ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=64)
PLAUSIBLE = st.floats(min_value=1e-6, max_value=2 * MAX_PRICE, allow_nan=False)
VALUE = st.one_of(ANY_FLOAT, PLAUSIBLE, st.sampled_from([0.0, -1.0, 1.0, MAX_PRICE, 1e50]))
NOW = 1_800_000_000_000


@st.composite
def bar_arrays(draw):
    n = draw(st.integers(0, 8))
    cols = [np.array(draw(st.lists(VALUE, min_size=n, max_size=n))) for _ in range(6)]
    base = draw(st.sampled_from([EARLIEST_MS - HOUR, EARLIEST_MS, 1_700_000_000_000, NOW, 10**18]))
    offsets = draw(st.lists(st.integers(-2 * HOUR, 2 * HOUR), min_size=n, max_size=n))
    start = np.array([base + o for o in offsets], dtype=np.int64)
    return cols, start, draw(st.sampled_from([None, *INTERVALS]))


@PROPERTY
@given(bar_arrays())
def test_property_vectorised_check_agrees_with_the_per_bar_rule(data):
    (o, h, lo, c, v, q), start, interval = data
    problems = [
        bar_problem(
            *(float(a[k]) for a in (o, h, lo, c, v, q)), start_ms=int(start[k]), interval=interval, now_ms=NOW
        )
        for k in range(len(o))
    ]
    bad = [k for k, p in enumerate(problems) if p is not None]
    try:
        check_ohlcv(o, h, lo, c, v, q, start_ms=start, interval=interval, now_ms=NOW)
    except InvalidCandlesError as exc:
        kind, _, detail = problems[bad[0]].partition(": ")
        assert str(exc).startswith(f"{kind} at index {bad[0]} (") and detail in str(exc)
        assert f"({len(bad)} bad rows in all)" in str(exc)
    else:
        assert not bad, problems


@st.composite
def kline_items(draw):
    """Mostly well-formed WS kline items with a field or two damaged, plus arbitrary JSON."""
    if draw(st.booleans()):
        return draw(JSON)
    start = draw(st.sampled_from([1_700_000_000_000, 1_700_000_000_001, 10**18, 0]))
    item = {
        "start": start,
        "open": "100",
        "high": "101",
        "low": "99",
        "close": "100.5",
        "volume": "3",
        "turnover": "300",
        "confirm": True,
    }
    for key in draw(st.lists(st.sampled_from(sorted(item)), max_size=3)):
        item[key] = draw(SCALAR)
    return item


@PROPERTY
@given(kline_items(), st.sampled_from(INTERVALS))
def test_property_ws_parser_never_raises(item, interval):
    candle, problem = _parse_ws_kline(item, interval)
    assert (candle is None) != (problem is None)
    if candle is not None:
        assert isinstance(candle, Candle) and candle.high >= max(candle.open, candle.close) > 0
        assert isinstance(candle.closed, bool)
    json.dumps(problem)  # a loggable string


@pytest.mark.parametrize("field", ["start", "open", "high", "low", "close", "volume"])
def test_every_number_spelling_in_every_ws_field_is_parsed_or_rejected(field):
    """Each spelling in every field, not only the ones the property draws: "²" and a 5000-digit start
    crashed the parser once."""
    good = {"start": 1_700_000_000_000, "open": "100", "high": "101", "low": "99", "close": "100.5",
            "volume": "3", "turnover": "300", "confirm": True}  # fmt: skip
    for text in NUMBER_SPELLINGS:
        candle, problem = _parse_ws_kline({**good, field: text}, "60")
        assert (candle is None) != (problem is None), (field, text)


@st.composite
def kline_bodies(draw):
    start = 1_700_000_000_000 - 1_700_000_000_000 % HOUR
    rows = []
    for k in range(draw(st.integers(0, 5))):
        row = [str(start + k * HOUR), "100", "101", "99", "100.5", "3", "300"]
        for j in draw(st.lists(st.integers(0, 6), max_size=2)):
            row[j] = draw(SCALAR)
        rows.append(row)
    body = {"retCode": 0, "result": {"list": rows}}
    if draw(st.integers(0, 4)) == 0:
        body = draw(JSON)
    return body, {"start": start, "end": start + 10 * HOUR}


@PROPERTY
@given(kline_bodies())
def test_property_rest_parser_raises_only_user_errors(body_params):
    body, params = body_params
    try:
        got = _parse_kline_list(body, params, "60", params["end"])
    except UserError:
        return
    assert isinstance(got, Candles) and np.all(np.diff(got.start_ms) > 0)
    assert np.all((got.start_ms >= params["start"]) & (got.start_ms <= params["end"]))


CSV_CELL = st.one_of(
    st.sampled_from(["", "abc", "nan", "-1", "0", "1e50", "2024-01-01", "2024-01-01 01:00", "1704067200000"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**64), 2**64).map(str),
)


@PROPERTY
@given(
    st.lists(
        st.sampled_from(["timestamp", "open", "high", "low", "close", "volume", "turnover", "x"]), max_size=7
    ),
    st.lists(st.lists(CSV_CELL, min_size=7, max_size=7), max_size=6),
)
def test_property_csv_parser_raises_only_user_errors(tmp_path_factory, header, rows):
    path = tmp_path_factory.mktemp("csv") / "in.csv"
    width = len(header)
    path.write_text(",".join(header) + "\n" + "".join(",".join(r[:width]) + "\n" for r in rows))
    try:
        got = Candles.from_csv(path)
    except UserError:
        return
    got.validate()


def test_candle_problem_keeps_its_contract():
    good = Candle(1_700_000_000_000, 100.0, 110.0, 90.0, 105.0, 3.0)
    assert candle_problem(good) is None
    assert candle_problem(good._replace(closed=False)) == "candle is not closed yet"
    assert candle_problem(good._replace(high=1e50)).startswith("implausible high")
    assert next_start_ms(good.start_ms, "60") - good.start_ms == HOUR


def test_jump_problem_bounds_the_move_from_the_previous_close(rng):
    prev = float(rng.uniform(50, 150))
    assert jump_problem(prev, prev * 1.2, prev * 0.9, 0.5) is None
    assert jump_problem(prev, 1e50, prev * 0.9, None) is None  # no limit configured
    assert jump_problem(prev, 1e50, prev * 0.9, 0.5).startswith("price jump: ")
    assert "over the limit of 50.0%" in jump_problem(prev, prev, prev / 1.6, 0.5)  # a fall counts alike
    assert jump_problem(float("nan"), prev, prev, 0.5) is None  # nothing to compare with yet


def test_rest_page_with_two_different_candles_at_one_start_is_refused(rng):
    c = random_candles(rng, 5)
    rows = [kline_row(r) for r in c]
    params = {"start": int(c.start_ms[0]), "end": int(c.start_ms[-1])}
    body = {"retCode": 0, "result": {"list": [*rows, rows[2]]}}
    assert _parse_kline_list(body, params, "60", params["end"] + HOUR).equals(
        c
    )  # an exact repeat is harmless
    other = [rows[2][0], *rows[3][1:]]
    body = {"retCode": 0, "result": {"list": [*rows, other]}}
    with pytest.raises(UserError, match="two different candles starting at"):
        _parse_kline_list(body, params, "60", params["end"] + HOUR)
