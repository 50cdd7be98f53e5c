"""Exact from a cold start: the live loop's decisions equal a backtest over the exchange's full series from
the first live bar on — after a cold start from REST (the loop fetches FeatureSpec.history_bars of history
first) and after a ``--resume`` (the committed streaming state continues). Served by the local fake Bybit,
on the real BTCUSDT candles when ../shared/data has them, else on a synthetic market."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from convnext_fast.cli import main
from convnext_fast.data.candles import Candles
from convnext_fast.prediction import model_outputs
from convnext_fast.trading.decision import DecisionPolicy

from ..data.fake_bybit import FakeBybit
from .support import HOUR_MS, SPEC, WINDOW, market, tiny_checkpoint

pytestmark = pytest.mark.timeout(180)

BTC_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bybit_btcusdt_60.csv"
LIVE = 2000  # bars compared
FIRST = 4000  # index of the first live bar: well past the cold-start history, so seeds really differ


def parity_series(rng: np.random.Generator, end_at_live_ms: int | None = None) -> Candles:
    """FIRST + LIVE hourly candles (a random stretch of the real ones when present); with
    ``end_at_live_ms`` shifted in time so the first live bar starts then (features ignore timestamps)."""
    n = FIRST + LIVE
    if BTC_CSV.is_file():
        real = Candles.from_csv(BTC_CSV)
        start = int(rng.integers(0, len(real) - n))
        c = real[start : start + n]
    else:
        c = market(n, rng)
    if end_at_live_ms is None:
        return c
    shift = end_at_live_ms - int(c.start_ms[FIRST])
    return Candles(c.start_ms + shift, c.open, c.high, c.low, c.close, c.volume, c.turnover)


def backtest_decisions(ckpt, candles: Candles):
    """``(probs [N, 3], scores [N])`` of the batch path over the whole series."""
    outputs, meta = model_outputs(str(ckpt), candles)
    _, probs, _ = DecisionPolicy.from_meta(meta, 0.5).batch(outputs)
    score = np.where(np.isfinite(outputs[:, 0]), probs[:, :2].max(axis=1), np.nan)
    return probs, score


def gap_threshold(score: np.ndarray) -> float:
    """Near the median confidence, halfway between two neighbouring ones (see test_decision)."""
    s = np.sort(score[np.isfinite(score)])
    mid = len(s) // 2
    k = mid - 20 + int(np.argmax(np.diff(s[mid - 20 : mid + 20])))
    return float((s[k] + s[k + 1]) / 2)


def compare(records: list[dict], candles: Candles, probs: np.ndarray, tau: float) -> dict:
    """Exactly-once coverage of the live bars and decision parity; returns the parity figures."""
    from convnext_fast.trading.signals import signals_from_probs

    bars = [r for r in records if r["event"] == "candle"]
    starts = [r["start_ms"] for r in bars]
    assert starts == candles.start_ms[FIRST : FIRST + len(bars)].tolist(), "candles lost or duplicated"
    live_probs = np.array([r["probs"] for r in bars], dtype=float)
    want = probs[FIRST : FIRST + len(bars)]
    dprob = float(np.abs(live_probs - want).max())
    mismatches = int((np.array([r["signal"] for r in bars]) != signals_from_probs(want, tau)).sum())
    assert mismatches == 0 and dprob <= 1e-4, (mismatches, dprob)
    return {"bars": len(bars), "mismatches": mismatches, "max_dprob": dprob}


def test_history_bars_is_the_slowest_recursion():
    import math

    ema200 = 199 + math.ceil(math.log(1e-6) / math.log(1 - 2 / 201))  # seeded at bar 199, then (1 - α)^k
    assert SPEC.history_bars(1e-6) == ema200 == 1581
    assert SPEC.history_bars(1e-3) < SPEC.history_bars(1e-6)
    with pytest.raises(ValueError, match="tol"):
        SPEC.history_bars(0.0)


@pytest.mark.slow
def test_cold_start_from_rest_then_resume_match_the_full_series_backtest(tmp_path, rng, capsys):
    now_hour = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    candles = parity_series(rng, end_at_live_ms=now_hour)
    ckpt = tiny_checkpoint(tmp_path / "m.safetensors", rng, candles)
    probs, score = backtest_decisions(ckpt, candles)
    tau = gap_threshold(score[FIRST:])
    out, state = tmp_path / "live.jsonl", tmp_path / "state.db"

    # The exchange: everything before the first live bar is closed; the rest is released once the loop is up.
    with FakeBybit(candles, now_ms=now_hour + 1000) as fake:
        argv = [
            "live", "--source", "rest", "--base-url", fake.rest_url, "--ws-url", fake.ws_url,
            "--checkpoint", str(ckpt), "--threshold", repr(tau), "--poll-seconds", "0.05",
            "--out", str(out), "--state", str(state), "--heartbeat-s", "0", "--durability", "os",
        ]  # fmt: skip

        def release():
            deadline = time.monotonic() + 60
            while not (out.exists() and out.read_text().strip()) and time.monotonic() < deadline:
                time.sleep(0.02)
            fake.set_now(int(candles.start_ms[-1]) + HOUR_MS)

        threading.Thread(target=release, daemon=True).start()
        assert main([*argv, "--max-bars", str(LIVE // 2)]) == 0
        fetched = {int(r["start"]) for r in fake.requests if "start" in r}
        assert min(fetched) <= candles.start_ms[FIRST] - (SPEC.history_bars() + WINDOW) * HOUR_MS
        done = sum(json.loads(line)["event"] == "candle" for line in out.read_text().splitlines())
        assert main([*argv, "--max-bars", str(LIVE - done), "--resume"]) == 0
        # The paper broker's funding: one history request covers the backlog, not one per caught-up bar.
        assert 1 <= len(fake.funding_requests) <= 2 * 10, len(fake.funding_requests)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    starts = [r for r in records if r["event"] == "start"]
    assert starts[0]["seeded_bars"] >= SPEC.history_bars() + WINDOW and starts[1]["resumed_from"]
    assert any(r["event"] == "heartbeat" for r in records)
    figures = compare(records, candles, probs, tau)
    assert figures["bars"] == LIVE
    print("cold start REST + resume parity:", figures)


def test_too_little_history_is_what_the_drift_was():
    """Why the cold start fetches so much: with only warm-up + window bars the EMA-200 channel is still far
    from its full-history value (the drift the issue measured)."""
    from convnext_fast.features.pipeline import compute_features

    c = market(6000, np.random.default_rng(7))
    full = compute_features(c.open, c.high, c.low, c.close, c.volume)
    for bars, worst in ((SPEC.warmup + WINDOW + 8, 1e-3), (SPEC.history_bars(), 1e-6)):
        cold = compute_features(*(a[-bars:] for a in (c.open, c.high, c.low, c.close, c.volume)))
        diff = np.nanmax(np.abs(cold[:, -1] - full[:, -1]) / (np.abs(full[:, -1]) + 1e-3))
        assert (diff > worst) if worst == 1e-3 else (diff <= 1e-4), (bars, diff)
