"""Live for N symbols (live/universe.py): the replay of a universe makes the portfolio backtest's decisions
bar for bar with one batched model call per bar; N symbols over one fake WebSocket with one symbol's candle
late and one lost lose or repeat no candle; kill -9 + ``--resume`` continues every symbol where it stopped."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from convnext_fast.cli import main
from convnext_fast.data.bybit import BybitClient, RetryPolicy
from convnext_fast.data.bybit_ws import stream_klines_many
from convnext_fast.errors import UserError
from convnext_fast.live.loop import OutputSink
from convnext_fast.live.predictor import make_predictor
from convnext_fast.live.universe import (
    UniverseContext,
    UniverseEngine,
    UniverseStore,
    bars_table,
    parse_symbols,
    replay_universe,
    run_universe,
)
from convnext_fast.trading.backtest import BacktestConfig
from convnext_fast.trading.portfolio import run_portfolio
from convnext_fast.trading.signals import signals_from_probs
from convnext_fast.train.prepare import normalisation
from tests.child_env import child_env

from ..data.fake_bybit import FakeBybitMany, random_candles
from .support import (
    HISTORY,
    HOUR_MS,
    SPEC,
    WINDOW,
    batch_features,
    batch_probs,
    make_engine,
    market,
    model_and_norm,
)

pytestmark = pytest.mark.timeout(120)


class _CountingPredict:
    def __init__(self, predict):
        self.predict, self.batches = predict, []

    def __call__(self, x):
        self.batches.append(x.shape[0])
        return self.predict(x)


def _universe(model, norm, symbols, threshold, backend="reference"):
    engines = {s: make_engine(model, norm, threshold=threshold, backend=backend) for s in symbols}
    predict = _CountingPredict(make_predictor(model, backend)[0])
    return UniverseEngine(engines, predict), predict


def _records(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.slow
def test_universe_replay_makes_the_portfolio_backtests_decisions_bar_for_bar(rng):
    symbols = ("AAA", "BBB", "CCC", "DDD")
    n_hist, n_live = SPEC.warmup + 20, 240
    series = {s: market(n_hist + n_live, rng) for s in symbols}
    assert len({float(c.close[-1]) for c in series.values()}) == len(symbols)  # really different markets
    model, _ = model_and_norm(rng)
    pooled = np.concatenate([batch_features(c)[:, n_hist:] for c in series.values()], axis=1)
    norm = normalisation(pooled, np.arange(WINDOW, pooled.shape[1]), WINDOW)
    batch = {s: batch_probs(model, norm, c)[n_hist:] for s, c in series.items()}
    known = np.concatenate([b[~np.isnan(b[:, 0]), :2].max(axis=1) for b in batch.values()])
    threshold = float(np.median(known))
    universe, predict = _universe(model, norm, symbols, threshold)
    for s in symbols:
        universe.engines[s].warm_up(series[s][:n_hist])
    out = io.StringIO()
    live = {s: c[n_hist:] for s, c in series.items()}
    bars = asyncio.run(
        run_universe(
            universe, replay_universe(live, interval_ms=HOUR_MS), UniverseContext(HOUR_MS), OutputSink(out)
        )
    )
    table = bars_table(_records(out), symbols)
    assert bars == n_live
    # One model call per bar once the windows are full, over every symbol at once.
    assert predict.batches and set(predict.batches) == {len(symbols)}
    assert len(predict.batches) == universe.model_calls <= n_live

    sizes = np.stack([table[s]["size"] for s in symbols])
    signal_live = np.stack([table[s]["signal"] for s in symbols])
    for i, s in enumerate(symbols):
        assert table[s]["start_ms"].tolist() == live[s].start_ms.tolist()
        p = batch[s]
        ready = ~np.isnan(p[:, 0])
        want = np.zeros(n_live)
        want[ready] = signals_from_probs(p[ready], threshold)
        # Only a bar within float noise of the threshold or a tie may differ (batch of 4 vs all windows).
        edge = (np.abs(p[:, :2] - threshold).min(axis=1) < 1e-5) | (np.abs(p[:, 0] - p[:, 1]) < 1e-5)
        differ = np.flatnonzero(signal_live[i] != want)
        assert set(differ) <= set(np.flatnonzero(edge)), (s, differ[:10])
        assert len(set(signal_live[i][ready])) >= 2, "the test should exercise more than one decision"

    # The same decisions in the portfolio backtest (sizing="symbol") give the live equity bar for bar.
    prices = [np.stack([getattr(live[s], f) for s in symbols]) for f in ("open", "high", "low", "close")]
    config = BacktestConfig(taker_fee_bps=5.5, slippage_bps=1.0)
    result = run_portfolio(*prices, signal_live, sizes, config, symbols=symbols, sizing="symbol")
    base = config.initial_equity
    live_equity = base + sum(table[s]["equity"] - base for s in symbols)
    np.testing.assert_allclose(live_equity[:-1], result.equity[:-1], rtol=1e-12)  # last bar: forced close
    for i, s in enumerate(symbols):
        np.testing.assert_array_equal(table[s]["position"][:-1], result.position[i, :-1])
    assert np.any(result.position != 0)
    assert universe.portfolio_equity() == pytest.approx(live_equity[-1], rel=1e-12)


def _client(fake) -> BybitClient:
    return BybitClient(
        fake.rest_url, fake.ws_url, progress=False, min_request_interval=0.0, reconnect_delay=0.05,
        max_reconnect_delay=0.2, retry=RetryPolicy(max_retries=2, base_delay=0.01),
    )  # fmt: skip


def test_n_symbols_over_one_websocket_with_a_late_and_a_lost_candle(rng):
    symbols = ("AAA", "BBB", "CCC")
    n_stream = 8
    end_ms = (int(time.time() * 1000) - 86_400_000) // HOUR_MS * HOUR_MS
    full = {s: random_candles(rng, HISTORY + n_stream, end_ms=end_ms) for s in symbols}
    served = {s: c[:HISTORY] for s, c in full.items()}
    model, norm = model_and_norm(rng)
    universe, predict = _universe(model, norm, symbols, 0.4)
    for s in symbols:
        universe.engines[s].warm_up(served[s])
    since = {s: int(served[s].start_ms[-1]) + HOUR_MS for s in symbols}
    out = io.StringIO()
    # CCC's candle of bar 2 comes after the others' bar 3 (past the grace: bar 2 goes without it); its bar 5
    # never comes over the WebSocket (REST has it: backfilled when bar 6 shows the hole).
    late, lost = 2, 5

    with FakeBybitMany(served) as fake:
        client = _client(fake)

        async def scenario():
            stream = stream_klines_many(client, list(symbols), "60", since_ms=since, max_reconnects=3)
            task = asyncio.ensure_future(
                run_universe(universe, stream, UniverseContext(HOUR_MS, grace_s=0.3), OutputSink(out))
            )
            await asyncio.to_thread(fake.wait_for_subscribers, 1)
            held = None
            for k in range(n_stream):
                for s in symbols:
                    candle = full[s][HISTORY + k]
                    if s == "CCC" and k == late:
                        held = candle
                        continue
                    if s == "CCC" and k == late + 1:  # after the others' next bar, before its own next
                        await asyncio.sleep(0.05)
                        fake.push_candle(held, symbol=s)
                    fake.push_candle(candle, symbol=s, deliver=not (s == "CCC" and k == lost))
                await asyncio.sleep(0.05)
            want = len(symbols) * n_stream
            for _ in range(200):
                if len(out.getvalue().splitlines()) >= want:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # anything extra (a duplicate) would show up now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(scenario())
        assert fake.subscribe_count == 1  # one connection, every topic

    records = _records(out)
    for s in symbols:
        got = [r["start_ms"] for r in records if r["symbol"] == s]
        assert got == full[s].start_ms[HISTORY:].tolist(), f"{s}: candles lost, duplicated or out of order"
    # The on-time symbols were batched together: never a call wider than the universe, and CCC's late
    # candle of bar 2 went alone.
    assert max(predict.batches) == len(symbols) and 1 in predict.batches


def test_universe_store_one_transaction_per_bar_and_resume_checks(tmp_path, rng):
    state = tmp_path / "u.db"
    store = UniverseStore(state, "os")
    ident = {"source": "synthetic", "symbols": ["A", "B"], "interval": "60", "model": "m", "dataset": "d"}
    store.start_new(ident)
    snap = {
        "last_start_ms": 5,
        "bars_processed": 1,
        "broker": {"x": 1},
        "scalars": {},
        "features": b"f",
        "ring": b"r",
    }
    store.commit_bar(
        [("A", {"start_ms": 5, "symbol": "A"}, snap), ("B", {"start_ms": 5, "symbol": "B"}, snap)]
    )
    with pytest.raises(Exception):  # the same bar twice: the whole transaction is refused
        store.commit_bar(
            [("B", {"start_ms": 6, "symbol": "B"}, snap), ("A", {"start_ms": 5, "symbol": "A"}, snap)]
        )
    assert [r["symbol"] for r in store.universe_records()] == ["A", "B"]
    assert set(store.check_resume_universe(ident)) == {"A", "B"}
    with pytest.raises(UserError, match="trades"):
        store.check_resume_universe({**ident, "symbols": ["A", "C"]}, force=True)
    with pytest.raises(UserError, match="--force"):
        store.check_resume_universe({**ident, "model": "other"})
    with pytest.raises(UserError, match="already holds a run"):
        store.start_new(ident)
    store.close()
    with pytest.raises(UserError, match="twice"):
        parse_symbols("A,B,a")


def _argv(tmp_path, *extra):
    return [
        "live", "--symbols", "AAA,BBB,CCC", "--source", "synthetic", "--bars", "420", "--window", "64",
        "--variant", "atto", "--threshold", "0.34", "--durability", "os", "--heartbeat-s", "0", *extra,
    ]  # fmt: skip


def _candles_of(path: Path) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "candle"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_kill_9_and_resume_n_symbols_processes_every_candle_once(tmp_path):
    """A straight run, and the same run killed (SIGKILL) twice mid-stream then resumed: identical records."""
    ref_out = tmp_path / "ref.jsonl"
    assert main(_argv(tmp_path, "--state", str(tmp_path / "ref.db"), "--out", str(ref_out))) == 0
    want = _candles_of(ref_out)
    out, state = tmp_path / "k.jsonl", tmp_path / "k.db"
    env = child_env()
    for kill in range(2):
        extra = ["--state", str(state), "--out", str(out), "--speed", "2e5"] + (["--resume"] if kill else [])
        before = len(_candles_of(out)) if out.exists() else 0
        proc = subprocess.Popen(
            [sys.executable, "-m", "convnext_fast.live", *_argv(tmp_path, *extra)[1:]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b'"event":"candle"') >= before + 12:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before its kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert main(_argv(tmp_path, "--state", str(state), "--out", str(out), "--resume")) == 0
    got = _candles_of(out)
    key = ("symbol", "start_ms", "signal", "position", "equity")
    assert [tuple(r[k] for k in key) for r in got] == [tuple(r[k] for k in key) for r in want]
    # Probabilities (rounded to 6 digits in the records) may differ in the last digit: after a kill a bar can
    # be batched with fewer symbols, and the C++ session sums in another order at another batch size (~6e-8).
    got_probs = np.array([r["probs"] for r in got], dtype=float)
    want_probs = np.array([r["probs"] for r in want], dtype=float)
    assert np.abs(got_probs - want_probs).max() <= 2e-6


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sizing", "kelly"], "--sizing is single-symbol only"),
        (["--source", "rest"], "WebSocket only"),
        (["--resume"], "does not exist"),
    ],
)
def test_symbols_refuses_what_it_cannot_do_with_one_line(tmp_path, capsys, extra, message):
    argv = [*_argv(tmp_path, "--state", str(tmp_path / "none.db")), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
