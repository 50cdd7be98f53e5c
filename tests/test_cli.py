"""``convnext-fast``: help for every command, one-line user errors (exit 2), TOML config, and the live
command on the SYNTHETIC market (offline), with resume."""

from __future__ import annotations

import json

import pytest

from convnext_fast.cli import COMMANDS, main

pytestmark = pytest.mark.timeout(120)

FAST_LIVE = ["live", "--window", "64", "--bars", "400", "--threshold", "0.34"]


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_documents_its_options(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: convnext-fast " + command)
    assert text.count("--") >= 3


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["live", "--source", "replay", "--data", "/no/such/candles.csv"], "/no/such/candles.csv"),
        (["live", "--source", "replay"], "--data"),
        (["live", "--resume", "--state", "/no/such/state.json"], "does not exist"),
        (["live", "--checkpoint", "/no/such/model.safetensors"], "does not exist"),
        (["live", "--source", "synthetic", "--threshold", "1.5"], "--threshold"),
        (["live", "--orders", "--source", "synthetic"], "--source ws or rest"),
        (["live", "--orders", "--source", "ws"], "--order-qty"),
        (["--config", "/no/such/config.toml", "live"], "no such file"),
    ],
)
def test_user_mistakes_are_one_line_with_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convnext-fast: error:") and needle in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_unknown_interval_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as done:
        main(["live", "--interval", "7"])
    assert done.value.code == 2 and "--interval" in capsys.readouterr().err


def test_config_file_sets_defaults_and_flags_win(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text('[live]\nsource = "synthetic"\nmax-bars = 4\nwindow = 64\nbars = 400\n')
    assert main(["--config", str(config), "live", "--max-bars", "2"]) == 0
    records = _json_lines(capsys.readouterr().out)
    assert [r["event"] for r in records] == ["start", "candle", "candle", "summary"]
    config.write_text("[live]\nno_such_option = 1\n")
    assert main(["--config", str(config), "live"]) == 2
    assert "unknown option 'no_such_option'" in capsys.readouterr().err
    config.write_text("[nope]\nx = 1\n")
    assert main(["--config", str(config), "live"]) == 2
    assert "unknown table" in capsys.readouterr().err


def test_offline_live_says_synthetic_first_and_resumes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Nothing listens on 127.0.0.1:9, so "auto" finds no network and falls back to the SYNTHETIC market.
    offline = ["--base-url", "http://127.0.0.1:9", "--state", "s.json"]
    assert main([*FAST_LIVE, *offline, "--max-bars", "5"]) == 0
    captured = capsys.readouterr()
    first = _json_lines(captured.out)
    assert first[0]["event"] == "start" and first[0]["source"].startswith("SYNTHETIC")
    assert captured.err.splitlines()[0].startswith("SYNTHETIC market"), captured.err
    candles = [r for r in first if r["event"] == "candle"]
    assert len(candles) == 5 and all(r["probs"] is not None for r in candles)
    summary = first[-1]
    assert summary["event"] == "summary" and summary["latency_us"]["total"]["n"] == 5

    assert main([*FAST_LIVE, *offline, "--max-bars", "3", "--resume"]) == 0
    resumed = _json_lines(capsys.readouterr().out)
    assert resumed[0]["resumed_from"] is not None
    next_candles = [r for r in resumed if r["event"] == "candle"]
    assert next_candles[0]["start_ms"] == candles[-1]["start_ms"] + 3_600_000
    assert next_candles[0]["equity"] != 0


def test_replay_of_a_csv_file_to_a_jsonl_file(tmp_path, capsys, monkeypatch, rng):
    from convnext_fast.data.synthetic import synthetic_ohlcv

    monkeypatch.chdir(tmp_path)
    bars = synthetic_ohlcv(300, seed=int(rng.integers(1000)))
    rows = ["timestamp,Open,High,Low,Close,Volume"] + [
        f"{t},{o:.17g},{h:.17g},{lo:.17g},{c:.17g},{v:.17g}"
        for t, o, h, lo, c, v in zip(
            *(bars[k] for k in ("start_ms", "open", "high", "low", "close", "volume")), strict=True
        )
    ]
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    assert main(["live", "--data", "c.csv", "--window", "64", "--out", "live.jsonl"]) == 0
    records = _json_lines((tmp_path / "live.jsonl").read_text())
    assert records[0]["source"] == "replay of c.csv"
    candles = [r for r in records if r["event"] == "candle"]
    assert candles[-1]["start_ms"] == int(bars["start_ms"][-1])
    assert len(candles) == 300 - records[0]["seeded_bars"]


def test_live_command_streams_from_bybit_and_names_an_unknown_symbol(tmp_path, capsys, monkeypatch, rng):
    import threading
    import time

    from convnext_fast.data.synthetic import synthetic_candles

    from .data.fake_bybit import FakeBybit

    monkeypatch.chdir(tmp_path)
    hour = 3_600_000
    n = 300
    start = (int(time.time() * 1000) // hour - n) * hour
    candles = synthetic_candles(n + 2, seed=int(rng.integers(1000)), start_ms=start)
    with FakeBybit(candles[:n]) as fake:
        urls = ["--base-url", fake.rest_url, "--ws-url", fake.ws_url, "--window", "64", "--state", "s.json"]

        def market_maker():
            fake.wait_for_subscribers(1, timeout=30)
            for c in candles[n:]:
                fake.push_candle(c)

        threading.Thread(target=market_maker, daemon=True).start()
        assert main(["live", *urls, "--max-bars", "2"]) == 0
        records = _json_lines(capsys.readouterr().out)
        assert records[0]["source"] == "Bybit linear BTCUSDT 60 (WebSocket)"
        streamed = [r for r in records if r["event"] == "candle"]
        assert [r["start_ms"] for r in streamed] == candles.start_ms[n:].tolist()
        assert all(r["probs"] is not None for r in streamed)

        assert main(["live", *urls, "--symbol", "NOSUCHCOIN"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "NOSUCHCOIN" in err[0], err


def test_version_comes_from_the_package(capsys):
    import convnext_fast

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"convnext-fast {convnext_fast.__version__}"
