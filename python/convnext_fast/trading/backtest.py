"""Bar-by-bar backtest of a signal series: the signal at bar t's close executes at bar t+1's open.

The per-bar rules (fees, slippage, stops, flips, leverage, funding) live in one numba step function in
:mod:`._engine`, shared with the live :class:`~convnext_fast.trading.broker.PaperBroker`; this module
validates inputs, runs the loop and packages the result.

Accounting: ``equity = cash + qty * price`` with a signed quantity (short = negative), i.e. a linear
perpetual/margin account: fees and funding are paid from cash, a short credits its sale proceeds.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from . import _engine
from ._checks import (
    TradingInputError,
    as_float_array,
    check_finite,
    check_non_negative,
    check_positive,
    check_same_length,
)

HOURS_PER_YEAR = 24 * 365
ORDER_TYPES = ("market", "limit")

TRADE_DTYPE = np.dtype(
    [
        ("entry_bar", np.int64),
        ("exit_bar", np.int64),
        ("entry_time_ms", np.int64),
        ("exit_time_ms", np.int64),
        ("side", np.int8),
        ("qty", np.float64),
        ("entry_price", np.float64),
        ("exit_price", np.float64),
        ("entry_fee", np.float64),
        ("exit_fee", np.float64),
        ("funding", np.float64),
        ("fees", np.float64),
        ("pnl", np.float64),
        ("return", np.float64),
        ("bars_held", np.int64),
        ("exit_reason", np.int8),
    ]
)
EXIT_REASONS = {
    _engine.EXIT_SIGNAL: "signal",
    _engine.EXIT_STOP: "stop_loss",
    _engine.EXIT_TAKE_PROFIT: "take_profit",
    _engine.EXIT_END: "end_of_data",
    _engine.EXIT_LIQUIDATION: "liquidation",
}


@dataclass(frozen=True)
class BacktestConfig:
    """Costs and limits. Fees and slippage are in basis points of the fill's notional.

    - Market orders pay ``taker_fee_bps`` and ``slippage_bps`` against us; limit orders pay
      ``maker_fee_bps`` and no slippage. Stop-losses, liquidations and the final close are market orders.
    - ``order_type``: how signal entries/exits fill, ``"market"`` or ``"limit"`` (the live ``--order-type
      limit --post-only``: a maker order at the open, assumed filled).
    - ``take_profit_order``: how the take-profit fills. ``"market"`` (default) is what the live order path
      attaches on the exchange (a market order triggered at the level: taker fee, slippage); ``"limit"`` a
      resting limit order (maker, no slippage).
    - ``stop_loss`` / ``take_profit`` are fractions of the entry price (0.02 = 2 %); ``None`` disables them.
    - ``leverage`` is the margin limit: a position's notional is at most ``leverage`` × equity at entry
      (a requested size above it is capped).
    - ``maintenance_margin`` (fraction of notional, e.g. 0.005; ``None``: off): the position is liquidated,
      like a stop (taker fee, slippage), where equity would fall to that fraction of its notional.
    - ``close_on_hold``: whether a Hold signal closes the position (default: Hold keeps what is held).
    """

    initial_equity: float = 10_000.0
    taker_fee_bps: float = 5.5
    maker_fee_bps: float = 2.0
    slippage_bps: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    leverage: float = 1.0
    close_on_hold: bool = False
    maintenance_margin: float | None = None
    order_type: str = "market"
    take_profit_order: str = "market"

    def __post_init__(self):
        check_positive("initial_equity", self.initial_equity)
        for name in ("taker_fee_bps", "maker_fee_bps", "slippage_bps"):
            check_non_negative(name, getattr(self, name))
        for name in ("stop_loss", "take_profit", "maintenance_margin"):
            value = getattr(self, name)
            if value is not None and check_positive(name, value) >= 1.0 and name != "take_profit":
                raise TradingInputError(f"{name} must be a fraction below 1, got {value}")
        check_positive("leverage", self.leverage)
        for name in ("order_type", "take_profit_order"):
            if getattr(self, name) not in ORDER_TYPES:
                raise TradingInputError(f"{name} must be one of {ORDER_TYPES}, got {getattr(self, name)!r}")

    def params(self) -> np.ndarray:
        params = np.zeros(_engine.N_PARAMS)
        params[_engine.P_TAKER] = self.taker_fee_bps * 1e-4
        params[_engine.P_MAKER] = self.maker_fee_bps * 1e-4
        params[_engine.P_SLIPPAGE] = self.slippage_bps * 1e-4
        params[_engine.P_STOP_LOSS] = self.stop_loss or 0.0
        params[_engine.P_TAKE_PROFIT] = self.take_profit or 0.0
        params[_engine.P_LEVERAGE] = self.leverage
        params[_engine.P_CLOSE_ON_HOLD] = float(self.close_on_hold)
        params[_engine.P_MAINTENANCE_MARGIN] = self.maintenance_margin or 0.0
        for fee, slip, kind in (
            (_engine.P_SIGNAL_FEE, _engine.P_SIGNAL_SLIPPAGE, self.order_type),
            (_engine.P_TP_FEE, _engine.P_TP_SLIPPAGE, self.take_profit_order),
        ):
            market = kind == "market"
            params[fee] = params[_engine.P_TAKER] if market else params[_engine.P_MAKER]
            params[slip] = params[_engine.P_SLIPPAGE] if market else 0.0
        return params

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BacktestConfig:
        return cls(**data)


def config_from_args(args: argparse.Namespace) -> BacktestConfig:
    """The :class:`BacktestConfig` of the trading-rule options (``convnext_fast.cli.options.add_trading_rules``)."""
    return BacktestConfig(**{f.name: getattr(args, f.name) for f in fields(BacktestConfig)})


@dataclass
class BacktestResult:
    """``equity[t]`` is marked at bar t's close after everything that happened in bar t (the last bar
    includes the forced close); ``position[t]`` is the signed quantity held at that close."""

    equity: np.ndarray
    position: np.ndarray
    trades: np.ndarray  # structured, dtype TRADE_DTYPE
    config: BacktestConfig
    timestamps_ms: np.ndarray | None = field(default=None)

    @property
    def returns(self) -> np.ndarray:
        """Simple per-bar returns of the equity curve, ``len(equity) - 1`` values."""
        return self.equity[1:] / self.equity[:-1] - 1.0

    @property
    def fees_paid(self) -> float:
        return float(self.trades["fees"].sum())

    @property
    def funding_paid(self) -> float:
        return float(self.trades["funding"].sum())

    def metrics(self, periods_per_year: float = HOURS_PER_YEAR):
        from .metrics import compute_metrics

        return compute_metrics(self.equity, self.trades, periods_per_year)


def trade_records(rows: np.ndarray, timestamps_ms: np.ndarray | None = None) -> np.ndarray:
    """Engine rows ``[n, N_TRADE_FIELDS]`` → structured trades (times are -1 without timestamps)."""
    trades = np.zeros(len(rows), dtype=TRADE_DTYPE)
    entry = rows[:, _engine.T_ENTRY_BAR].astype(np.int64)
    exit_ = rows[:, _engine.T_EXIT_BAR].astype(np.int64)
    trades["entry_bar"], trades["exit_bar"] = entry, exit_
    if timestamps_ms is None:
        trades["entry_time_ms"] = trades["exit_time_ms"] = -1
    else:
        trades["entry_time_ms"], trades["exit_time_ms"] = timestamps_ms[entry], timestamps_ms[exit_]
    trades["side"] = rows[:, _engine.T_SIDE]
    trades["qty"] = rows[:, _engine.T_QTY]
    trades["entry_price"] = rows[:, _engine.T_ENTRY_PRICE]
    trades["exit_price"] = rows[:, _engine.T_EXIT_PRICE]
    trades["entry_fee"] = rows[:, _engine.T_ENTRY_FEE]
    trades["exit_fee"] = rows[:, _engine.T_EXIT_FEE]
    trades["funding"] = rows[:, _engine.T_FUNDING]
    trades["fees"] = trades["entry_fee"] + trades["exit_fee"]
    trades["pnl"] = rows[:, _engine.T_PNL]
    trades["return"] = trades["pnl"] / (trades["qty"] * trades["entry_price"])
    trades["bars_held"] = exit_ - entry
    trades["exit_reason"] = rows[:, _engine.T_REASON]
    return trades


def check_bars(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray) -> None:
    """Prices must be finite, positive and consistent (low ≤ open, close ≤ high): the one OHLCV rule."""
    from ._checks import check_ohlc

    check_ohlc(open_, high, low, close)


def _signal_array(signal) -> np.ndarray:
    sig = as_float_array("signal", signal)
    check_finite("signal", sig)
    if not np.isin(sig, (-1.0, 0.0, 1.0)).all():
        raise TradingInputError("signal must contain only +1 (Long), -1 (Short) and 0 (Hold)")
    return sig


def _per_bar(name: str, values, n: int, *, default: float) -> np.ndarray:
    """A per-bar float array from a scalar, an array of length n, or None (→ ``default``)."""
    if values is None:
        return np.full(n, default)
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n, float(array))
    array = as_float_array(name, array)
    if len(array) != n:
        raise TradingInputError(f"{name} must have one value per bar ({n}), got {len(array)}")
    check_finite(name, array)
    return array


def _prepare(open_, high, low, close, size, funding):
    o, h, lo, c = (
        as_float_array(n, a) for n, a in (("open", open_), ("high", high), ("low", low), ("close", close))
    )
    n = check_same_length(open=o, high=h, low=lo, close=c)
    if n == 0:
        raise TradingInputError("need at least one bar, got empty price arrays")
    if not _engine.bars_ok(o, h, lo, c):
        check_bars(o, h, lo, c)
    sizes = _per_bar("size", size, n, default=1.0)
    if (sizes < 0).any():
        raise TradingInputError(
            f"size must be >= 0 (a fraction of equity); index {int(np.argmax(sizes < 0))} is not"
        )
    return o, h, lo, c, sizes, _per_bar("funding", funding, n, default=0.0)


def run_backtest(
    open,
    high,
    low,
    close,
    signal,
    size=1.0,
    config: BacktestConfig | None = None,
    *,
    funding=None,
    timestamps_ms=None,
) -> BacktestResult:
    """Simulate trading ``signal`` (+1 Long, -1 Short, 0 Hold, one per bar, decided at the bar's close).

    ``size`` (scalar or per bar) is the position's notional as a fraction of equity when it is opened;
    ``funding`` (scalar or per bar) is the funding rate charged on the notional held at that bar's close
    (positive: longs pay), 0 where no funding falls; ``timestamps_ms`` only labels the trade times.
    """
    config = config or BacktestConfig()
    o, h, lo, c, sizes, fund = _prepare(open, high, low, close, size, funding)
    sig = _signal_array(signal)
    check_same_length(close=c, signal=sig)
    times = None
    if timestamps_ms is not None:
        times = np.asarray(timestamps_ms, dtype=np.int64)
        check_same_length(close=c, timestamps_ms=times)
    state = _engine.new_state(config.initial_equity)
    equity, position, rows = _engine.run_loop(state, config.params(), o, h, lo, c, fund, sig, sizes)
    return BacktestResult(equity, position, trade_records(rows, times), config, times)


def sweep_thresholds(
    open,
    high,
    low,
    close,
    probs,
    thresholds,
    size=1.0,
    config: BacktestConfig | None = None,
    *,
    funding=None,
    periods_per_year: float = HOURS_PER_YEAR,
) -> dict[str, np.ndarray]:
    """Backtest the probability signals of :func:`~convnext_fast.trading.signals.signals_from_probs` at every
    threshold in ``thresholds`` in parallel (numba ``prange``: one full backtest per thread, only summary
    statistics kept). Returns arrays aligned with ``thresholds``: ``total_return``, ``sharpe``
    (per-bar returns, ddof=1, annualised by ``periods_per_year``), ``max_drawdown``, ``n_trades``,
    ``final_equity`` — each equal to what :func:`run_backtest` + metrics give for that threshold."""
    from .signals import check_probs

    config = config or BacktestConfig()
    o, h, lo, c, sizes, fund = _prepare(open, high, low, close, size, funding)
    p = check_probs(probs)
    check_same_length(close=c, probs=p)
    thr = as_float_array("thresholds", thresholds)
    check_finite("thresholds", thr)
    if ((thr < 0) | (thr > 1)).any():
        raise TradingInputError(f"thresholds must be in [0, 1], got {thr[(thr < 0) | (thr > 1)][:3]}")
    check_positive("periods_per_year", periods_per_year)
    out = _engine.sweep_loop(
        config.params(), config.initial_equity, o, h, lo, c, fund, p, sizes, thr, periods_per_year
    )
    names = ("total_return", "sharpe", "max_drawdown", "n_trades", "final_equity")
    result = {name: out[:, k].copy() for k, name in enumerate(names)}
    result["n_trades"] = result["n_trades"].astype(np.int64)
    result["threshold"] = thr
    return result
