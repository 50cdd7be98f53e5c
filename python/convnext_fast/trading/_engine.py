"""The numba core shared by the batch backtest, the live paper broker and the threshold sweep.

One bar is processed by :func:`step`; :func:`run_loop` calls it for every bar and
:class:`convnext_fast.trading.broker.PaperBroker` calls it once per live bar, so both make exactly the same
decisions and fills. All state lives in a float64 vector (layout ``S_*``) so the broker can save and
restore it, and all costs/limits in a float64 vector (layout ``P_*``) built by ``BacktestConfig``.

Order of events inside bar ``t`` (the order from the signal of bar ``t-1`` is pending):

1. At the open: close the position if the pending signal opposes it (or is Hold with ``close_on_hold``),
   then open the pending side if flat; these signal orders pay ``P_SIGNAL_FEE`` and ``P_SIGNAL_SLIPPAGE``
   (taker fee and slippage for market orders, maker fee and none for post-only limit orders).
2. Intrabar: the stop-loss / take-profit of the position now held is checked against low/high. If both
   could trigger in this bar we cannot know which came first, so the stop (the worse one) wins. A gap
   through the level fills at the open, which is where the market first traded past it. With a
   maintenance margin, the liquidation price acts as a second stop (whichever is nearer fires).
3. Funding for the position held at the close.
4. The signal of bar ``t`` becomes the pending order for bar ``t+1``: never the same bar.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..data.ohlcv import MAX_PRICE
from .signals import signal_from_probs_nb  # the one probability rule

# State vector layout.
S_CASH, S_QTY, S_ENTRY_PRICE, S_ENTRY_BAR, S_ENTRY_FEE, S_FUNDING = 0, 1, 2, 3, 4, 5
S_STOP, S_TAKE, S_BAR, S_PENDING_SIGNAL, S_PENDING_SIZE = 6, 7, 8, 9, 10
N_STATE = 11

# Parameter vector layout (rates are fractions, not bps).
P_TAKER, P_MAKER, P_SLIPPAGE, P_STOP_LOSS, P_TAKE_PROFIT, P_LEVERAGE, P_CLOSE_ON_HOLD = 0, 1, 2, 3, 4, 5, 6
P_MAINTENANCE_MARGIN = 7
# What signal orders and take-profits pay: taker + slippage when they fill as market orders (live attaches
# its take-profit as a market trigger), maker and no slippage when they rest as limit orders.
P_SIGNAL_FEE, P_SIGNAL_SLIPPAGE, P_TP_FEE, P_TP_SLIPPAGE = 8, 9, 10, 11
N_PARAMS = 12

# Trade record layout (one float64 row per closed trade).
T_ENTRY_BAR, T_EXIT_BAR, T_SIDE, T_QTY, T_ENTRY_PRICE, T_EXIT_PRICE = 0, 1, 2, 3, 4, 5
T_ENTRY_FEE, T_EXIT_FEE, T_FUNDING, T_PNL, T_REASON = 6, 7, 8, 9, 10
N_TRADE_FIELDS = 11

# Why a trade was closed.
EXIT_SIGNAL, EXIT_STOP, EXIT_TAKE_PROFIT, EXIT_END, EXIT_LIQUIDATION = 0, 1, 2, 3, 4

# A bar closes at most two trades: one by the signal at the open, one by a stop of the new position.
MAX_CLOSES_PER_BAR = 2


@nb.njit(cache=True)
def new_state(equity: float) -> np.ndarray:
    state = np.zeros(N_STATE)
    state[S_CASH] = equity
    state[S_STOP] = np.nan
    state[S_TAKE] = np.nan
    return state


@nb.njit(cache=True, inline="always")
def _close(state, fill, fee_rate, bar, reason, out):
    """Close the whole position at ``fill`` and write its trade record into ``out``."""
    qty = state[S_QTY]
    side = 1.0 if qty > 0 else -1.0
    size = abs(qty)
    fee = size * fill * fee_rate
    state[S_CASH] += qty * fill - fee
    entry_price = state[S_ENTRY_PRICE]
    out[T_ENTRY_BAR] = state[S_ENTRY_BAR]
    out[T_EXIT_BAR] = bar
    out[T_SIDE] = side
    out[T_QTY] = size
    out[T_ENTRY_PRICE] = entry_price
    out[T_EXIT_PRICE] = fill
    out[T_ENTRY_FEE] = state[S_ENTRY_FEE]
    out[T_EXIT_FEE] = fee
    out[T_FUNDING] = state[S_FUNDING]
    out[T_PNL] = qty * (fill - entry_price) - state[S_ENTRY_FEE] - fee - state[S_FUNDING]
    out[T_REASON] = reason
    state[S_QTY] = 0.0
    state[S_ENTRY_FEE] = 0.0
    state[S_FUNDING] = 0.0
    state[S_STOP] = np.nan
    state[S_TAKE] = np.nan


@nb.njit(cache=True, inline="always")
def liquidation_price(cash, qty, maintenance_margin):
    """The price p where equity ``cash + qty·p`` falls to the maintenance margin ``mm·|qty|·p``
    (≤ 0 for an unleveraged long, which can then never be liquidated)."""
    if qty > 0:
        return -cash / (qty * (1.0 - maintenance_margin))
    return cash / (-qty * (1.0 + maintenance_margin))


@nb.njit(cache=True)
def step(state, params, open_, high, low, close, funding_rate, signal, size, out):
    """Process one bar (see the module docstring); closed trades go to ``out`` rows; returns their count."""
    bar = state[S_BAR]
    slippage = params[P_SLIPPAGE]
    signal_slippage = params[P_SIGNAL_SLIPPAGE]
    tp_slippage = params[P_TP_SLIPPAGE]
    n_closed = 0
    pending = state[S_PENDING_SIGNAL]

    if state[S_QTY] != 0.0:
        side = 1.0 if state[S_QTY] > 0 else -1.0
        if (pending != 0.0 and pending != side) or (pending == 0.0 and params[P_CLOSE_ON_HOLD] != 0.0):
            _close(
                state,
                open_ * (1.0 - side * signal_slippage),
                params[P_SIGNAL_FEE],
                bar,
                EXIT_SIGNAL,
                out[n_closed],
            )
            n_closed += 1

    equity = state[S_CASH]  # flat here, so cash is the whole equity
    if state[S_QTY] == 0.0 and pending != 0.0 and state[S_PENDING_SIZE] > 0.0 and equity > 0.0:
        fraction = min(state[S_PENDING_SIZE], params[P_LEVERAGE])
        fill = open_ * (1.0 + pending * signal_slippage)
        qty = fraction * equity / fill
        fee = qty * fill * params[P_SIGNAL_FEE]
        state[S_CASH] -= pending * qty * fill + fee
        state[S_QTY] = pending * qty
        state[S_ENTRY_PRICE] = fill
        state[S_ENTRY_BAR] = bar
        state[S_ENTRY_FEE] = fee
        state[S_FUNDING] = 0.0
        # NaN disables a level: every comparison with it is false.
        state[S_STOP] = fill * (1.0 - pending * params[P_STOP_LOSS]) if params[P_STOP_LOSS] > 0 else np.nan
        state[S_TAKE] = (
            fill * (1.0 + pending * params[P_TAKE_PROFIT]) if params[P_TAKE_PROFIT] > 0 else np.nan
        )

    if state[S_QTY] != 0.0:
        stop = state[S_STOP]
        take = state[S_TAKE]
        stop_reason = EXIT_STOP
        if params[P_MAINTENANCE_MARGIN] > 0.0:
            # The price path reaches whichever of stop and liquidation lies nearer the open first.
            liquidation = liquidation_price(state[S_CASH], state[S_QTY], params[P_MAINTENANCE_MARGIN])
            if not (stop >= liquidation if state[S_QTY] > 0 else stop <= liquidation):  # NaN stop: off
                stop = liquidation
                stop_reason = EXIT_LIQUIDATION
        if state[S_QTY] > 0:
            if low <= stop:
                _close(
                    state,
                    min(stop, open_) * (1.0 - slippage),
                    params[P_TAKER],
                    bar,
                    stop_reason,
                    out[n_closed],
                )
                n_closed += 1
            elif high >= take:
                _close(
                    state,
                    max(take, open_) * (1.0 - tp_slippage),
                    params[P_TP_FEE],
                    bar,
                    EXIT_TAKE_PROFIT,
                    out[n_closed],
                )
                n_closed += 1
        else:
            if high >= stop:
                _close(
                    state,
                    max(stop, open_) * (1.0 + slippage),
                    params[P_TAKER],
                    bar,
                    stop_reason,
                    out[n_closed],
                )
                n_closed += 1
            elif low <= take:
                _close(
                    state,
                    min(take, open_) * (1.0 + tp_slippage),
                    params[P_TP_FEE],
                    bar,
                    EXIT_TAKE_PROFIT,
                    out[n_closed],
                )
                n_closed += 1

    if state[S_QTY] != 0.0 and funding_rate != 0.0:
        payment = state[S_QTY] * close * funding_rate  # positive rate: longs pay shorts
        state[S_CASH] -= payment
        state[S_FUNDING] += payment

    state[S_PENDING_SIGNAL] = signal
    state[S_PENDING_SIZE] = size
    state[S_BAR] = bar + 1.0
    return n_closed


@nb.njit(cache=True)
def close_at(state, params, price, out):
    """Market-close the open position at ``price`` on the last processed bar (end of data); returns 0 or 1."""
    if state[S_QTY] == 0.0:
        return 0
    side = 1.0 if state[S_QTY] > 0 else -1.0
    _close(
        state, price * (1.0 - side * params[P_SLIPPAGE]), params[P_TAKER], state[S_BAR] - 1.0, EXIT_END, out
    )
    return 1


@nb.njit(cache=True)
def run_loop(state, params, open_, high, low, close, funding, signal, size):
    """The batch backtest: ``step`` over every bar, then a forced close at the last close.

    Returns ``(equity [N], position [N], trades [n_trades, N_TRADE_FIELDS])``.
    """
    n = open_.shape[0]
    equity = np.empty(n)
    position = np.empty(n)
    trades = np.empty((max(64, n // 16), N_TRADE_FIELDS))
    scratch = np.empty((MAX_CLOSES_PER_BAR, N_TRADE_FIELDS))
    n_trades = 0
    for t in range(n):
        n_closed = step(
            state, params, open_[t], high[t], low[t], close[t], funding[t], signal[t], size[t], scratch
        )
        if t == n - 1:
            n_closed += close_at(state, params, close[t], scratch[n_closed])
        if n_trades + n_closed > trades.shape[0]:
            grown = np.empty((2 * trades.shape[0], N_TRADE_FIELDS))
            grown[:n_trades] = trades[:n_trades]
            trades = grown
        for k in range(n_closed):
            trades[n_trades] = scratch[k]
            n_trades += 1
        equity[t] = state[S_CASH] + state[S_QTY] * close[t]
        position[t] = state[S_QTY]
    return equity, position, trades[:n_trades].copy()


@nb.njit(cache=True)
def bars_ok(open_, high, low, close):
    """The price half of the one OHLCV rule (:mod:`convnext_fast.data.ohlcv`) in one pass: all prices > 0 and
    at most ``MAX_PRICE`` (so finite) with low ≤ open, close ≤ high (the NaN-safe way round: every comparison
    with NaN is false). The numpy check that names the culprit runs only when this fails."""
    for t in range(open_.shape[0]):
        o, c = open_[t], close[t]
        if not (0.0 < low[t] <= o <= high[t] <= MAX_PRICE and low[t] <= c <= high[t]):
            return False
    return True


@nb.njit(cache=True, parallel=True)
def sweep_loop(params, equity0, open_, high, low, close, funding, probs, size, thresholds, periods_per_year):
    """One full backtest per threshold, in parallel over thresholds (numba ``prange``), keeping only summary
    statistics so nothing per bar is stored. Returns ``[n_thresholds, 5]``: total return, Sharpe,
    max drawdown, trades, final equity."""
    n = open_.shape[0]
    n_thr = thresholds.shape[0]
    out = np.empty((n_thr, 5))
    for k in nb.prange(n_thr):
        state = new_state(equity0)
        scratch = np.empty((MAX_CLOSES_PER_BAR + 1, N_TRADE_FIELDS))
        n_trades = 0
        prev_equity = equity0
        peak = equity0
        max_dd = 0.0
        mean = 0.0
        m2 = 0.0  # Welford's running sum of squared deviations of the bar returns
        for t in range(n):
            sig = signal_from_probs_nb(probs[t, 0], probs[t, 1], thresholds[k])
            n_trades += step(
                state, params, open_[t], high[t], low[t], close[t], funding[t], sig, size[t], scratch
            )
            if t == n - 1:
                n_trades += close_at(state, params, close[t], scratch[0])
            eq = state[S_CASH] + state[S_QTY] * close[t]
            if t > 0:
                r = eq / prev_equity - 1.0
                delta = r - mean
                mean += delta / t
                m2 += delta * (r - mean)
            prev_equity = eq
            peak = max(peak, eq)
            max_dd = min(max_dd, eq / peak - 1.0)
        std = np.sqrt(m2 / (n - 2)) if n > 2 else np.nan
        out[k, 0] = prev_equity / equity0 - 1.0
        out[k, 1] = mean / std * np.sqrt(periods_per_year) if std > 0 else np.nan
        out[k, 2] = max_dd
        out[k, 3] = n_trades
        out[k, 4] = prev_equity
    return out
