"""The live twin of the backtest: a paper account fed one closed bar at a time.

``on_bar`` calls the same numba step function as :func:`~convnext_fast.trading.backtest.run_backtest`, so
over the same bars and signals it makes the same decisions and fills, to the last bit. ``state()`` is a
JSON-serialisable dict; ``PaperBroker.from_state`` resumes exactly where it stopped.
"""

from __future__ import annotations

import math

import numpy as np

from . import _engine
from ._checks import TradingInputError, check_non_negative, check_positive
from .backtest import TRADE_DTYPE, BacktestConfig, check_bars, trade_records

STATE_VERSION = 1


class PaperBroker:
    def __init__(self, config: BacktestConfig | None = None, equity: float | None = None):
        self.config = config or BacktestConfig()
        start = self.config.initial_equity if equity is None else check_positive("equity", equity)
        self._params = self.config.params()
        self._state = _engine.new_state(start)
        self._scratch = np.empty((_engine.MAX_CLOSES_PER_BAR, _engine.N_TRADE_FIELDS))
        self._last_close = np.nan

    @property
    def equity(self) -> float:
        """Equity marked at the last bar's close."""
        if self._state[_engine.S_QTY] == 0.0:
            return float(self._state[_engine.S_CASH])
        return float(self._state[_engine.S_CASH] + self._state[_engine.S_QTY] * self._last_close)

    @property
    def position(self) -> float:
        """Signed quantity held (short < 0)."""
        return float(self._state[_engine.S_QTY])

    @property
    def bars_seen(self) -> int:
        return int(self._state[_engine.S_BAR])

    @property
    def pending_signal(self) -> int:
        """The signal that will execute at the next bar's open."""
        return int(self._state[_engine.S_PENDING_SIGNAL])

    @property
    def pending_size(self) -> float:
        """The size (fraction of equity) queued with :attr:`pending_signal`."""
        return float(self._state[_engine.S_PENDING_SIZE])

    @property
    def last_close(self) -> float:
        """The last processed bar's close (NaN before the first bar)."""
        return float(self._last_close)

    def on_bar(
        self,
        open: float,
        high: float,
        low: float,
        close: float,
        signal: int,
        size: float,
        funding: float = 0.0,
    ) -> np.ndarray:
        """Process a newly closed bar: fill the order pending from the previous bar at this bar's open, check
        stops intrabar, charge ``funding``, then queue ``signal``/``size`` (decided at this close) for the next
        open. Returns the trades closed in this bar (structured, ``TRADE_DTYPE``; bar numbers count from the
        broker's first bar)."""
        bar = (float(open), float(high), float(low), float(close))
        if not (all(math.isfinite(p) and p > 0 for p in bar) and bar[2] <= min(bar[0], bar[3])
                and bar[1] >= max(bar[0], bar[3])):  # fmt: skip
            # The scalar test above is the fast path; the array check names what is wrong.
            check_bars(*(np.array([p]) for p in bar))
        if signal not in (-1, 0, 1):
            raise TradingInputError(f"signal must be +1, -1 or 0, got {signal!r}")
        size = check_non_negative("size", size)
        if not math.isfinite(funding):
            raise TradingInputError(f"funding must be finite, got {funding}")
        n_closed = _engine.step(
            self._state, self._params, *bar, float(funding), float(signal), size, self._scratch
        )
        self._last_close = bar[3]
        return trade_records(self._scratch[:n_closed]) if n_closed else np.zeros(0, dtype=TRADE_DTYPE)

    def close_position(self, price: float) -> np.ndarray:
        """Market-close whatever is held at ``price`` (e.g. the last close when a session ends), attributed to
        the last processed bar, exactly as the backtest's forced close at the end of data."""
        price = check_positive("price", price)
        if self.bars_seen == 0:
            raise TradingInputError("close_position needs at least one processed bar")
        n_closed = _engine.close_at(self._state, self._params, price, self._scratch[0])
        self._last_close = price
        return trade_records(self._scratch[:n_closed].copy())

    def state(self) -> dict:
        """Everything needed to resume: config, the engine state vector and the last close."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "engine_state": [float(v) for v in self._state],
            "last_close": self._last_close,
        }

    @classmethod
    def from_state(cls, state: dict) -> PaperBroker:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise TradingInputError(
                f"state must be a dict from PaperBroker.state() (version {STATE_VERSION})"
            )
        engine_state = np.asarray(state["engine_state"], dtype=np.float64)
        if engine_state.shape != (_engine.N_STATE,):
            raise TradingInputError(f"state['engine_state'] must hold {_engine.N_STATE} numbers")
        broker = cls(BacktestConfig.from_dict(state["config"]))
        broker._state[:] = engine_state
        broker._last_close = float(state["last_close"])
        return broker
