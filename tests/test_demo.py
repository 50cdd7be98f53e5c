"""The main job in ``--quick`` mode: it finishes, writes its HTML report, labels SYNTHETIC data as such,
and its live replay makes the backtest's decisions bar for bar."""

from __future__ import annotations

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
