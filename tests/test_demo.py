"""The main job in ``--quick`` mode: it finishes, writes its HTML report, labels SYNTHETIC data as such,
and its live replay makes the backtest's decisions bar for bar."""

from __future__ import annotations

import csv
import json

import pytest

from convnext_fast.cli import main


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_quick_demo_produces_report_and_live_parity(tmp_path, capsys, rng):
    out = tmp_path / "demo"
    code = main(["demo", "--quick", "--out", str(out), "--seed", str(int(rng.integers(1000)))])
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0, printed
    report = out / "report" / "report.html"
    html = report.read_text()
    assert "SYNTHETIC" in html and html.count("data:image/png;base64,") >= 3
    assert summary["data"].startswith("SYNTHETIC") and summary["report"] == str(report)
    same, total = (int(v) for v in summary["live replay = backtest decisions"].split(" bars")[0].split(" / "))
    assert same == total == 150
    assert str(report) in printed and "live tick-to-signal" in printed
    live = [json.loads(line) for line in (out / "live.jsonl").read_text().splitlines()]
    assert live[0]["event"] == "start" and live[-1]["event"] == "summary"
    assert sum(r["event"] == "candle" for r in live) == total

    # τ came from the traded fold's validation bars, and the run ends with its verdicts
    assert "(chosen on the validation bars of checkpoint" in summary["threshold τ"]
    verdicts = [line for line in printed.splitlines() if line.startswith("verdict (")]
    assert len(verdicts) == 2 and all("buy-and-hold" in v and "majority class" in v for v in verdicts)
    assert "τ chosen on each fold's validation bars" in verdicts[0] and "150 held-out bars" in verdicts[1]
    assert "threshold τ" in html and "buy-and-hold" in html

    # trades.csv beside the report: one row per backtest trade, adding up to the report's metrics
    metrics = json.loads((report.parent / "metrics.json").read_text())
    rows = list(csv.DictReader((report.parent / "trades.csv").open()))
    assert summary["trades"] == str(report.parent / "trades.csv")
    assert len(rows) == metrics["total_trades"]
    assert sum(float(r["fees"]) for r in rows) == pytest.approx(metrics["fees_paid"], rel=1e-9, abs=1e-9)
    pnl = sum(float(r["pnl"]) for r in rows)
    assert pnl == pytest.approx(
        metrics["final_equity"] - 10_000.0, rel=1e-9, abs=1e-6
    )  # positions closed at the end
    assert all(
        r["side"] in ("long", "short") and r["reason"] and r["entry_time"] <= r["exit_time"] for r in rows
    )
