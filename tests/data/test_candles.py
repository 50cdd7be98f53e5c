"""Candles container: invariants, merging, validation, gap reports and CSV import."""

from __future__ import annotations

import csv
import datetime as dt

import numpy as np
import pytest

from convnext_fast.data.candles import (
    Candle,
    Candles,
    InvalidCandlesError,
    interval_to_ms,
    next_start_ms,
)
from convnext_fast.errors import UserError
from tests.data.fake_bybit import random_candles

HOUR = 3_600_000


def test_interval_helpers():
    assert interval_to_ms("60") == HOUR
    assert interval_to_ms(15) == 15 * 60_000
    assert interval_to_ms("d") == 24 * HOUR
    with pytest.raises(UserError, match="interval '7'"):
        interval_to_ms("7")
    with pytest.raises(UserError, match="monthly"):
        interval_to_ms("M")
    dec = int(dt.datetime(2023, 12, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    jan = int(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    feb = int(dt.datetime(2024, 2, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert next_start_ms(dec, "M") == jan and next_start_ms(jan, "M") == feb
    assert next_start_ms(jan, "W") == jan + 7 * 24 * HOUR


def test_construction_checks_shapes_and_order(rng):
    c = random_candles(rng, 50)
    cols = c.columns()
    with pytest.raises(InvalidCandlesError, match=r"Candles\.volume has 49 rows"):
        Candles(**{**cols, "volume": cols["volume"][:-1]})
    i = int(rng.integers(1, 50))
    start = cols["start_ms"].copy()
    start[i] = start[i - 1]
    with pytest.raises(InvalidCandlesError, match=f"row {i} .* is not after row {i - 1}"):
        Candles(**{**cols, "start_ms": start})
    with pytest.raises(InvalidCandlesError, match="1-D"):
        Candles(**{**cols, "open": cols["open"].reshape(5, 10)})
    assert not c.open.flags.writeable, "columns are shared by slices, so they must be read-only"
    mine = cols["open"].copy()
    Candles(**{**cols, "open": mine})
    mine[0] = 1.0  # the caller's array stays theirs


def test_indexing_and_slicing(rng):
    c = random_candles(rng, 40)
    i = int(rng.integers(0, 40))
    row = c[i]
    assert isinstance(row, Candle) and row.closed
    assert (row.start_ms, row.open, row.turnover) == (c.start_ms[i], c.open[i], c.turnover[i])
    part = c[5:17]
    assert isinstance(part, Candles) and len(part) == 12
    np.testing.assert_array_equal(part.close, c.close[5:17])
    assert [r.start_ms for r in part] == list(c.start_ms[5:17])
    with pytest.raises(ValueError, match="step 1"):
        c[::2]


def test_from_unordered_sorts_and_keeps_last_duplicate(rng):
    c = random_candles(rng, 200)
    order = rng.permutation(200)
    extra = rng.choice(200, size=30, replace=False)
    revised_close = c.close[extra] * 1.5
    start = np.concatenate([c.start_ms[order], c.start_ms[extra]])
    close = np.concatenate([c.close[order], revised_close])
    cols = {
        k: np.concatenate([v[order], v[extra]])
        for k, v in c.columns().items()
        if k not in ("start_ms", "close")
    }
    merged = Candles.from_unordered(start, close=close, **cols)
    expected_close = c.close.copy()
    expected_close[extra] = revised_close
    np.testing.assert_array_equal(merged.start_ms, c.start_ms)
    np.testing.assert_array_equal(merged.close, expected_close)
    np.testing.assert_array_equal(merged.volume, c.volume)


def test_concat_later_part_wins(rng):
    c = random_candles(rng, 100)
    a, b = c[:60], c[40:]
    b = Candles(**{**b.columns(), "volume": b.volume + 1.0})
    merged = Candles.concat([b, a][::-1])  # a then b
    np.testing.assert_array_equal(merged.start_ms, c.start_ms)
    np.testing.assert_array_equal(merged.volume[:40], c.volume[:40])
    np.testing.assert_array_equal(merged.volume[40:], c.volume[40:] + 1.0)
    assert Candles.from_rows(list(c)).equals(c)
    assert len(Candles.concat([])) == 0


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda c, i: c["high"].__setitem__(i, max(c["open"][i], c["close"][i]) * 0.999), "high < max"),
        (lambda c, i: c["low"].__setitem__(i, min(c["open"][i], c["close"][i]) * 1.001), "low > min"),
        (lambda c, i: c["volume"].__setitem__(i, -1.0), "negative volume"),
        (lambda c, i: c["close"].__setitem__(i, np.nan), "non-finite"),
        (lambda c, i: c["open"].__setitem__(i, np.inf), "non-finite"),
        (lambda c, i: c["turnover"].__setitem__(i, -5.0), "negative turnover"),
    ],
)
def test_validate_names_the_bad_row(rng, breakage, message):
    c = random_candles(rng, 300)
    assert c.validate() is c
    cols = {k: v.copy() for k, v in c.columns().items()}
    i = int(rng.integers(0, 300))
    breakage(cols, i)
    with pytest.raises(InvalidCandlesError, match=f"at index {i} ") as err:
        Candles(**cols).validate()
    assert message in str(err.value) and "(1 bad rows in all)" in str(err.value)


def test_gaps_report_each_missing_run(rng):
    c = random_candles(rng, 500)
    holes = sorted(rng.choice(np.arange(5, 480, 10), size=6, replace=False))
    lengths = rng.integers(1, 6, size=6)
    keep = np.ones(500, bool)
    for h, n in zip(holes, lengths, strict=True):
        keep[h : h + n] = False
    gaps = c[keep].gaps("60")
    assert [(g.first_missing_ms, g.n_missing) for g in gaps] == [
        (c.start_ms[h], n) for h, n in zip(holes, lengths, strict=True)
    ]
    assert all(g.next_present_ms == c.start_ms[h + n] for g, h, n in zip(gaps, holes, lengths, strict=True))
    assert "missing from" in str(gaps[0])
    assert c.gaps("60") == []


def test_from_csv_real_bybit_file(btc_csv):
    c = Candles.from_csv(btc_csv)
    assert len(c) == 44_766
    with open(btc_csv) as f:
        rows = list(csv.reader(f))[1:4]
    for i, row in enumerate(rows):
        t = dt.datetime.fromisoformat(row[0]).replace(tzinfo=dt.timezone.utc)
        assert c[i][:6] == (int(t.timestamp() * 1000), *map(float, row[1:6]))
    assert c.gaps("60") == []
    c.validate()
    assert np.isnan(c.turnover).all()


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@pytest.mark.parametrize("layout", ["iso_space", "iso_tz", "epoch_ms", "epoch_s"])
@pytest.mark.parametrize("descending", [False, True])
def test_from_csv_layouts_round_trip(tmp_path, rng, layout, descending):
    c = random_candles(rng, 120)

    def stamp(ms):
        t = dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)
        return {
            "iso_space": t.strftime("%Y-%m-%d %H:%M:%S"),
            "iso_tz": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "epoch_ms": str(ms),
            "epoch_s": str(ms // 1000),
        }[layout]

    with_turnover = layout in ("epoch_ms", "iso_tz")
    header = ["open_time" if layout.startswith("epoch") else "Date", "Open", "HIGH", "low", "Close", "Volume"]
    header += ["turnover"] if with_turnover else []
    rows = [
        [stamp(int(r.start_ms)), *(repr(v) for v in r[1:6]), *([repr(r.turnover)] if with_turnover else [])]
        for r in c
    ]
    _write_csv(tmp_path / "c.csv", header, rows[::-1] if descending else rows)
    got = Candles.from_csv(tmp_path / "c.csv")
    expected = c if with_turnover else Candles(**{**c.columns(), "turnover": np.full(len(c), np.nan)})
    assert got.equals(expected)


def test_from_csv_errors(tmp_path, rng):
    c = random_candles(rng, 10)
    rows = [[int(r.start_ms), r.open, r.high, r.low, r.close, r.volume] for r in c]
    with pytest.raises(UserError, match="not found"):
        Candles.from_csv(tmp_path / "missing.csv")
    _write_csv(tmp_path / "a.csv", ["timestamp", "open", "high", "low", "close"], [r[:5] for r in rows])
    with pytest.raises(UserError, match="no 'volume' column"):
        Candles.from_csv(tmp_path / "a.csv")
    dup = [*rows, [rows[3][0], rows[3][1] * 2, *rows[3][2:]]]
    _write_csv(tmp_path / "b.csv", ["timestamp", "open", "high", "low", "close", "volume"], dup)
    with pytest.raises(InvalidCandlesError, match="two different candles"):
        Candles.from_csv(tmp_path / "b.csv")
    _write_csv(tmp_path / "c.csv", ["timestamp", "open", "high", "low", "close", "volume"], [*rows, rows[3]])
    assert len(Candles.from_csv(tmp_path / "c.csv")) == 10, "an exact duplicate row is dropped"
