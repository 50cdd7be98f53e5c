"""``live --orders`` survives ``kill -9``: the real command (WebSocket market of the local fake Bybit, the
private fake exchange, which executes a repeated orderLinkId so any resend shows as a duplicate) is killed
at random points, half of them right after the exchange accepted an order and before its reply, and
resumed each time. No order is ever sent twice, the exchange position never passes the guard, every
candle is committed and written exactly once, and the orders found again after a crash are in the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from convnext_fast.live.exchange import Credentials
from convnext_fast.live.state import LiveStore
from tests.child_env import child_env

from ..data.fake_bybit import FakeBybit
from .fake_exchange import FakeExchange
from .support import candles_until_now

# Imports the library once, then forks one child per run (a fresh interpreter costs seconds of imports on
# a loaded 2-core box) and restarts it with --resume whenever it dies, until the test says stop. The child
# runs the command's own main(), exactly as `python -m convnext_fast.live` does.
_RESTARTER = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])
from convnext_fast.cli import main
import convnext_fast.live.session, convnext_fast.live.sources, convnext_fast.live.orders, convnext_fast.data.bybit
import convnext_fast.data.bybit_ws, convnext_fast.reference, convnext_fast.live.order_cli, httpx, websockets
import convnext_fast.features.pipeline as fp
fp.StreamingFeatures().update(1.0, 1.0, 1.0, 1.0, 1.0)  # numba's cached code, loaded once for all children
runs = 0
while True:
    argv = args["argv"] + (["--resume"] if runs else [])
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        os._exit(main(argv))
    runs += 1
    with open(args["pid"] + ".tmp", "w") as f:
        f.write(str(pid))
    os.replace(args["pid"] + ".tmp", args["pid"])
    _, status = os.waitpid(pid, 0)
    if os.path.exists(args["stop"]):
        sys.exit(os.waitstatus_to_exitcode(status))
    if os.waitstatus_to_exitcode(status) != -9:
        sys.exit(f"run {runs} ended by itself with {os.waitstatus_to_exitcode(status)}")
"""


def _committed(state: Path) -> int | None:
    if not state.exists():
        return None
    store = LiveStore(state, "os")
    try:
        saved = store.load()
        return None if saved is None else saved.last_start_ms
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_during_orders_never_sends_an_order_twice(tmp_path, rng):
    creds = Credentials("kEy" + "".join(rng.choice(list("ABCDEFGH23456789"), 15)), "sEcReT" + "x" * 30)
    n, m, kills, guard = 300, 1500, 10, Decimal("0.02")
    candles = candles_until_now(rng, n, m)
    state, out, pid_file, stop = (tmp_path / x for x in ("s.db", "live.jsonl", "pid", "stop"))
    with (
        FakeBybit(candles[:n]) as market,
        FakeExchange(creds, guard=guard, unique_link_ids=False) as exchange,
    ):
        argv = ["live", "--source", "ws", "--base-url", market.rest_url, "--ws-url", market.ws_url,
                "--window", "64", "--state", str(state), "--out", str(out), "--durability", "os",
                "--threshold", "0", "--orders", "--order-qty", "0.01", "--max-position", str(guard),
                "--orders-url", exchange.url]  # fmt: skip
        spec = {"argv": argv, "pid": str(pid_file), "stop": str(stop)}
        env = child_env(BYBIT_API_KEY=creds.api_key, BYBIT_API_SECRET=creds.api_secret)
        proc = subprocess.Popen(
            [sys.executable, "-c", _RESTARTER, json.dumps(spec)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        kills_done, pushed = threading.Event(), []

        def market_maker():  # a candle every 0.12 s, listened to or not (REST keeps them), until the kills end
            market.wait_for_subscribers(1, timeout=120)
            for c in candles[n:]:
                market.push_candle(c)
                pushed.append(int(c.start_ms))
                if kills_done.is_set() and len(pushed) >= 20:
                    break
                time.sleep(0.12)

        maker = threading.Thread(target=market_maker, daemon=True)
        maker.start()

        try:
            killed_at_order, last_pid = 0, None
            for k in range(kills):
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # a new process that has committed a new candle
                    pid = int(pid_file.read_text()) if pid_file.exists() else None
                    if pid is not None and pid != last_pid:
                        break
                    time.sleep(0.01)
                before = _committed(state)
                while _committed(state) == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert time.monotonic() < deadline, proc.stderr and proc.poll()
                last_pid = pid
                if k % 2 == 0:  # right after the exchange accepted an order, before the client hears of it
                    hit = threading.Event()

                    def kill_now(body, pid=pid, hit=hit):
                        exchange.on_execute = None
                        os.kill(pid, signal.SIGKILL)
                        hit.set()

                    exchange.on_execute = kill_now
                    if hit.wait(20):
                        killed_at_order += 1
                        continue
                    exchange.on_execute = None
                time.sleep(float(rng.uniform(0, 0.3)))  # anywhere: features, model, order, commit, write
                os.kill(pid, signal.SIGKILL)
            kills_done.set()
            maker.join(30)
            last = pushed[-1]
            deadline = time.monotonic() + 60
            while _committed(state) != last and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.write_text("")
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
            assert proc.wait(30) == 0, proc.stderr.read()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    assert killed_at_order >= 3
    assert exchange.duplicates() == 0 and exchange.resent == 0
    assert exchange.max_abs_position <= guard and exchange.rejected_signatures == 0
    store = LiveStore(state, "os")
    try:
        committed = [r["start_ms"] for r in store.records_after(None)]
        recovered = store.events("order_recovered")
        saved = store.load()
    finally:
        store.close()
    assert committed == pushed  # every candle exactly once, none skipped
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["start_ms"] for r in lines if r["event"] == "candle"] == committed
    # Each order accepted while its process died was found again by its link id after the restart.
    assert len(recovered) >= 1 and all(e[2]["link_id"] in exchange.executions for e in recovered)
    assert Decimal(saved.engine["scalars"]["orders"]["expected"]) == exchange.position
    print(f"kill -9 x{kills} ({killed_at_order} right after an order): {len(exchange.executions)} orders, "
          f"0 duplicates, max |position| {exchange.max_abs_position} <= guard {guard}, "
          f"{len(recovered)} orders recovered by link id")  # fmt: skip
