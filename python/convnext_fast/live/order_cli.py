"""The ``live`` command's real-order options and the per-candle hook that drives :class:`OrderMirror`.

Kept apart from ``live/cli.py`` so the loop can be rewritten without touching the order path: the loop
calls ``hook(engine)`` after a closed candle, before committing it, and commits the events it returns and
``hook.state()`` with the candle.
"""

from __future__ import annotations

import argparse
import logging
import os

from ..errors import UserError

log = logging.getLogger("convnext_fast.live.orders")
LIVE_SOURCES = ("ws", "rest")


def add_order_arguments(parser: argparse.ArgumentParser) -> None:
    orders = parser.add_argument_group(
        "real orders (opt-in; keys from BYBIT_API_KEY / BYBIT_API_SECRET). The kill switch flattens "
        "(reduce-only), commits the order_kill event and exits with status 2; --resume then refuses to "
        "trade until 00:00 UTC unless --force, and orders of the last hour still count after a resume"
    )
    orders.add_argument("--orders", action="store_true", help="send real orders mirroring the paper position")
    orders.add_argument(
        "--dry-run-orders",
        action="store_true",
        help="with --orders: print the exact signed requests (key masked) instead of sending them",
    )
    orders.add_argument("--mainnet", action="store_true", help="orders on mainnet (default: testnet)")
    orders.add_argument(
        "--order-qty", type=float, help="contracts per position at size 1 (required with --orders)"
    )
    orders.add_argument(
        "--max-position", type=float, help="position guard in contracts (required with --orders)"
    )
    orders.add_argument(
        "--orders-url",
        help="private REST base URL, https only (default: Bybit testnet; mainnet with --mainnet)",
    )
    orders.add_argument(
        "--post-only", action="store_true", help="limit orders rest on the book as maker (PostOnly)"
    )
    orders.add_argument(
        "--recv-window", type=int, default=5000, help="X-BAPI-RECV-WINDOW in ms (default 5000)"
    )
    orders.add_argument(
        "--max-daily-loss", type=float, help="kill switch: flatten and stop at this loss fraction of the day"
    )
    orders.add_argument(
        "--max-orders-per-hour", type=int, help="kill switch: flatten and stop past this many orders an hour"
    )
    orders.add_argument(
        "--run-id", help="orderLinkId prefix, 8 letters/digits (default: derived from symbol and --state)"
    )


class OrderHook:
    """``LiveContext.after_candle``: after each closed candle, mirror the broker's pending intent.

    Every order event (intent, link id, signed request without secrets, response, fill, reconcile) is
    collected and returned as ``(kind, payload)``: the loop commits them in the candle's own transaction,
    then writes them to the JSON lines, so the store and the output never disagree about an order. The
    mirror's state (exchange position, kill-switch counters) rides in the same snapshot (:meth:`state`)."""

    def __init__(self, mirror):
        self.mirror = mirror
        self._events: list[dict] = []
        mirror.emit = self._events.append
        mirror.exchange.on_event = self._events.append

    def _drain(self) -> list[tuple[str, dict]]:
        events = [(r["event"], {k: v for k, v in r.items() if k != "event"}) for r in self._events]
        self._events.clear()
        return events

    def state(self) -> dict:
        return self.mirror.state()

    def resume(self, state: dict | None, last_start_ms: int, interval_ms: int, *, force: bool) -> None:
        """Continue the mirror of a resumed run: its counters and last exchange position, a refusal to
        trade again on the day the kill switch stopped it (unless ``force``), and the lookup of any order
        sent for the first uncommitted bar (a ``kill -9`` between the order and the commit)."""
        import datetime

        from .orders import DAY_MS

        if state is not None:
            self.mirror.set_state(state)
        killed = self.mirror.killed
        if killed is not None:
            now_ms = int(self.mirror._clock() * 1000)
            if now_ms // DAY_MS == killed["ms"] // DAY_MS and not force:
                when = datetime.datetime.fromtimestamp(killed["ms"] / 1000, datetime.timezone.utc)
                raise UserError(
                    f"--resume: the kill switch stopped this run today at {when:%H:%M} UTC ({killed['reason']}); "
                    "it trades again from 00:00 UTC, or now with --force"
                )
            self.mirror.killed = None  # a new day (or --force): the switch is armed again
        import httpx

        from .orders import OrderError

        try:
            self.mirror.recover(last_start_ms + interval_ms)
        except (OrderError, httpx.HTTPError) as exc:  # unsure what was sent: refuse to trade blind
            raise UserError(
                f"--resume: cannot look up this run's orders on the exchange ({exc}); nothing was sent, "
                "try again"
            ) from None

    def __call__(self, engine) -> list[tuple[str, dict]]:
        import httpx

        from .orders import KillSwitchTripped, OrderError

        broker = engine.broker
        try:
            self.mirror.after_bar(
                engine.last_start_ms,
                broker.pending_signal,
                pending_size=broker.pending_size,
                reference_price=broker.last_close,
                equity=broker.equity,
            )
        except KillSwitchTripped as exc:
            exc.events = self._drain()  # the loop commits them with the candle, then stops
            raise
        except (OrderError, httpx.HTTPError) as exc:  # one failed order must not stop the paper loop
            log.error("order not placed: %s", exc)
        return self._drain()


def order_hook(args: argparse.Namespace, config) -> OrderHook | None:
    """The hook for ``--orders`` (None without it); refuses a setup that cannot be safe before any request."""
    if not args.orders:
        if args.dry_run_orders:
            raise UserError("--dry-run-orders needs --orders")
        return None
    if args.source not in LIVE_SOURCES:
        raise UserError(
            f"--orders needs a live market (--source ws or rest), not --source {args.source}: "
            "real orders must never follow a replay or the SYNTHETIC market"
        )
    if args.order_qty is None or args.max_position is None:
        raise UserError("--orders needs --order-qty and --max-position")
    if config.take_profit_order != "market":
        raise UserError(
            "--orders attaches market take-profits on the exchange; drop --take-profit-order limit"
        )
    from .orders import (
        MAINNET_URL,
        TESTNET_URL,
        BybitExchange,
        Credentials,
        KillSwitch,
        OrderMirror,
        run_id_for,
    )

    url = args.orders_url or (MAINNET_URL if args.mainnet else TESTNET_URL)
    kill = KillSwitch(args.max_daily_loss, args.max_orders_per_hour)
    run_id = args.run_id or run_id_for(args.category, args.symbol, args.interval, os.path.abspath(args.state))
    if not (run_id.isalnum() and len(run_id) <= 8):
        raise UserError(f"--run-id must be at most 8 letters/digits, got {run_id!r}")
    exchange = BybitExchange(
        Credentials.from_env(),
        base_url=url,
        category=args.category,
        recv_window_ms=args.recv_window,
        dry_run=args.dry_run_orders,
    )
    exchange.sync_time()
    mirror = OrderMirror(
        exchange,
        args.symbol,
        args.order_qty,
        max_position=args.max_position,
        run_id=run_id,
        close_on_hold=config.close_on_hold,
        stop_loss=config.stop_loss,
        take_profit=config.take_profit,
        order_type=config.order_type,
        post_only=args.post_only,
        kill_switch=kill,
    )
    return OrderHook(mirror)


def add_sizing_and_funding_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sizing ...`` and ``--funding/--no-funding``: the backtest's own options, so live sizes and pays
    funding as the backtest does."""
    from ..cli import options

    options.add_sizing(parser)
    options.add_funding(parser)


def attach_sizing_and_funding(args, engine, config, history, *, synthetic: bool) -> str:
    """Set ``engine.sizer`` (``--sizing``: the same :class:`SizingRule` as the backtest, fed every close
    from ``history`` on) and ``engine.funding`` (perpetual funding on its paper broker: ``--funding PATH``,
    the store's funding beside a replayed ``--data``, or Bybit's funding history for a live market). Call
    it after the warm-up; on a resume, then ``engine.restore_hooks`` with the saved state. Returns a short
    description for the start line."""
    import numpy as np

    from ..data.candles import interval_to_ms
    from ..data.funding import (
        PERPETUAL_CATEGORIES,
        FundingSchedule,
        fetch_funding,
        find_funding,
        load_funding,
    )
    from ..trading.sizing import StreamingSizer, sizing_from_args

    interval_ms = interval_to_ms(args.interval)
    sizer = StreamingSizer(sizing_from_args(args, config, 365 * 86_400_000 / interval_ms))
    for close in np.asarray(history.close):
        sizer.observe(close)
    engine.sizer = sizer  # the engine observes every close from here on and sizes with it
    schedule, where = None, "off"
    if args.funding:
        schedule, where = FundingSchedule(load_funding(args.funding), interval_ms), args.funding
    elif not args.no_funding and args.category in PERPETUAL_CATEGORIES and not synthetic:
        if args.data:
            rates = find_funding(args.data, args.symbol, args.category)
            if rates is not None:
                schedule, where = FundingSchedule(rates, interval_ms), f"store beside {args.data}"
            else:
                log.warning("no funding history beside %s: the paper broker charges none", args.data)
        else:
            from ..data.bybit import BybitClient

            client = BybitClient(args.base_url, category=args.category, progress=False)
            schedule = FundingSchedule(
                None,
                interval_ms,
                lambda start, end: fetch_funding(client, args.symbol, start, end),
                known_until_ms=int(history.start_ms[-1]) + interval_ms if len(history) else 0,
            )
            where = "Bybit funding history"
    engine.funding = schedule
    return f"sizing {args.sizing}, funding {where}"
