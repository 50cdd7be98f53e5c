"""``demo --universe --quick``: the chain over a SYNTHETIC universe offline, and over a store's symbols."""

from __future__ import annotations

import json

import pytest

from convnext_fast.cli import main
from convnext_fast.data.store import CandleStore
from convnext_fast.data.synthetic import synthetic_universe


@pytest.mark.timeout(170)
@pytest.mark.slow
def test_quick_universe_demo_trains_and_backtests_the_portfolio(tmp_path, capsys, rng):
    out = tmp_path / "demo"
    assert (
        main(["demo", "--universe", "--quick", "--out", str(out), "--seed", str(int(rng.integers(1000)))])
        == 0
    )
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"].startswith("SYNTHETIC") and summary["symbols (held-out bars each)"] == "4 (200)"
    html = (out / "report" / "report.html").read_text()
    assert "Per symbol" in html and all(f"SYNTHETIC0{i}" in html for i in range(4))
    assert "| portfolio |" in printed and "4 symbols x 200 bars" in printed
    results = json.loads((out / "train" / "results.json").read_text())
    # The held-out bars (the newest 200 of 2400 hourly bars from 2020-01-01) were never trained on.
    assert results["folds"][-1]["ranges"]["test"][1] < "2020-04-01T16:00"


@pytest.mark.timeout(170)
@pytest.mark.slow
def test_universe_demo_runs_on_a_store_given_its_symbols(tmp_path, rng, capsys):
    store = CandleStore(tmp_path / "store")
    for symbol, candles in synthetic_universe(2, 2400, seed=int(rng.integers(1000))).items():
        store.write(candles, symbol, "60")
    assert main(["demo", "--universe", "--data", str(tmp_path / "store"), "--out", str(tmp_path / "d")]) == 2
    assert "needs --symbols" in capsys.readouterr().err
    argv = [
        "demo",
        "--universe",
        "--quick",
        "--data",
        str(tmp_path / "store"),
        "--symbols",
        "SYNTHETIC01,SYNTHETIC00",
    ]
    assert main([*argv, "--out", str(tmp_path / "d")]) == 0
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert (
        summary["data"].startswith(str(tmp_path / "store"))
        and summary["symbols (held-out bars each)"] == "2 (200)"
    )
