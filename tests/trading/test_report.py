"""The HTML report is self-contained and shows what the result holds."""

from __future__ import annotations

import base64
import csv
import itertools
import json
import re

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from convnext_fast.trading.backtest import EXIT_REASONS, BacktestConfig, run_backtest
from convnext_fast.trading.report import equity_figure, monthly_returns, write_report, write_trades_csv
from convnext_fast.trading.verdict import MIN_TRADES_FOR_SHARPE, classification_skill
from tests.trading.market import random_bars, random_signals

HOUR_MS = 3_600_000


def test_report_is_self_contained_with_charts_and_tables(rng, tmp_path):
    n = 24 * 75  # about two and a half months of hourly bars
    o, h, lo, c = random_bars(rng, n)
    times = 1_704_067_200_000 + HOUR_MS * np.arange(n)  # from 2024-01-01 00:00 UTC
    res = run_backtest(
        o, h, lo, c, random_signals(rng, n), 1.0, BacktestConfig(stop_loss=0.02), timestamps_ms=times
    )
    path = write_report(res, times, c, tmp_path / "report")

    page = path.read_text(encoding="utf-8")
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 3
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere

    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["total_trades"] == len(res.trades) > 0
    # metrics as people read them: fractions as percentages, ratios to two decimals
    assert f"<th>sharpe</th><td>{metrics['sharpe']:,.2f}</td>" in page
    assert f"<th>total_return</th><td>{100 * metrics['total_return']:.2f}%</td>" in page
    assert f"<th>max_drawdown</th><td>{100 * metrics['max_drawdown']:.2f}%</td>" in page
    # January's return: from the first equity to the last one of January.
    january = res.equity[24 * 31 - 1] / res.equity[0] - 1
    assert f"{100 * january:+.1f}%" in page
    assert "<th>2024</th>" in page
    n_stops = int((res.trades["exit_reason"] == 1).sum())
    assert f"stop_loss {n_stops}," in page


def test_monthly_returns_chain_to_the_total(rng):
    n = 24 * 100
    equity = 1000 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    times = 1_700_000_000_000 + HOUR_MS * np.arange(n)
    monthly = monthly_returns(times, equity)
    assert len(monthly) == 4
    assert np.prod([1 + r for r in monthly.values()]) == pytest.approx(equity[-1] / equity[0], rel=1e-12)


def test_report_rejects_mismatched_inputs(rng, tmp_path):
    o, h, lo, c = random_bars(rng, 50)
    res = run_backtest(o, h, lo, c, random_signals(rng, 50))
    times = HOUR_MS * np.arange(50)
    with pytest.raises(ValueError, match="equal lengths"):
        write_report(res, times[:-1], c, tmp_path)
    with pytest.raises(ValueError, match="strictly increasing"):
        write_report(res, times[::-1], c, tmp_path)


def _hourly_result(rng, n, signals=None, **config):
    o, h, lo, c = random_bars(rng, n)
    times = 1_704_067_200_000 + HOUR_MS * np.arange(n)
    sig = random_signals(rng, n) if signals is None else signals
    return run_backtest(o, h, lo, c, sig, 1.0, BacktestConfig(**config), timestamps_ms=times), times, c


def test_report_names_checkpoint_threshold_baselines_and_buy_and_hold(rng, tmp_path):
    res, times, c = _hourly_result(rng, 24 * 40)
    skill = classification_skill(
        np.array([0, 1, 2, 2]), np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]),
        np.array([0.2, 0.3, 0.5]),
    )  # fmt: skip
    path = write_report(
        res, times, c, tmp_path / "r", checkpoint="runs/x/fold_2/best.safetensors", threshold=0.46,
        threshold_source="chosen on the validation bars of checkpoint runs/x", skill=skill,
    )  # fmt: skip
    page = path.read_text(encoding="utf-8")
    assert "runs/x/fold_2/best.safetensors" in page
    assert (
        "<th>threshold τ</th><td>0.46</td><td>chosen on the validation bars of checkpoint runs/x</td>" in page
    )
    # accuracy 3/4 against the majority class (Hold) on the same bars, 2/4
    assert "<td>75.0%</td><td>majority class 50.0%</td>" in page
    assert f"<td>{skill.log_loss:.4f}</td><td>class prior {skill.baseline_log_loss:.4f}</td>" in page
    m = res.metrics(24 * 365)
    hold = c[-1] / c[0] - 1
    assert f"<td>{m.total_return:+.2%}</td><td>buy-and-hold {hold:+.2%}</td>" in page
    assert ("Warning:" in page) == (m.total_trades < MIN_TRADES_FOR_SHARPE)


def test_report_warns_when_too_few_trades_for_sharpe(rng, tmp_path):
    n = 24 * 20
    signals = np.zeros(n)
    signals[[10, 200]] = [1, -1]  # one long, flipped once to a short: 2 trades
    res, times, c = _hourly_result(rng, n, signals)
    assert len(res.trades) == 2
    page = write_report(res, times, c, tmp_path / "r").read_text(encoding="utf-8")
    assert f"only 2 trades: with fewer than {MIN_TRADES_FOR_SHARPE} trades" in page
    assert "no baseline comparison" not in page  # no skill given, none claimed


@pytest.mark.parametrize("days", [3, 33, 75, 800])  # 33 days (the demo's 800 held-out bars) overlapped
def test_date_labels_never_overlap(rng, days):
    n = 24 * days
    res, times, c = _hourly_result(rng, n)
    fig = equity_figure(times.astype("datetime64[ms]"), res.equity, c)
    FigureCanvasAgg(fig).draw()
    labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(labels) >= 3, "a date axis needs a few labels to read"
    boxes = sorted((b.x0, b.x1) for b in (t.get_window_extent() for t in labels))
    for (_, right), (left, _) in itertools.pairwise(boxes):
        assert right < left, f"overlapping date labels: {[t.get_text() for t in labels]}"


def test_trades_csv_matches_the_backtest_trades(rng, tmp_path):
    res, _times, _c = _hourly_result(rng, 24 * 30, stop_loss=0.02)
    path = write_trades_csv(res.trades, tmp_path / "trades.csv")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(res.trades) > 0
    reasons = {v: k for k, v in EXIT_REASONS.items()}
    for row, t in zip(rows, res.trades, strict=True):
        assert int(row["entry_bar"]) == t["entry_bar"] and int(row["exit_bar"]) == t["exit_bar"]
        assert np.datetime64(row["entry_time"], "ms").astype(np.int64) == t["entry_time_ms"]
        assert np.datetime64(row["exit_time"], "ms").astype(np.int64) == t["exit_time_ms"]
        assert row["side"] == ("long" if t["side"] > 0 else "short")
        for name in ("qty", "entry_price", "exit_price", "fees", "funding", "pnl", "return"):
            assert float(row[name]) == t[name], name  # written at full precision
        assert reasons[row["reason"]] == t["exit_reason"]
