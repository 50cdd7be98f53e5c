"""The HTML report is self-contained and shows what the result holds."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from convnext_fast.trading.backtest import BacktestConfig, run_backtest
from convnext_fast.trading.report import monthly_returns, write_report
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
    assert f"{metrics['sharpe']:.6g}" in page
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
