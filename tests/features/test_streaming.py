"""Streaming indicator states equal the batch indicators bar for bar (≤ 1e-12 relative), warm-up included,
and revising the still-open bar never disturbs the committed state."""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.features import indicators as ind
from convnext_fast.features import streaming as st
from tests.features import assert_series_close, random_candles

STREAM_REL = 1e-12
N_BARS = 2600  # crosses the rolling sums' exact resync (every 1024 bars) twice


def _cases(c, rng):
    """(name, streaming state, names of its inputs, batch outputs as a [k, N] array)."""
    h, lo, cl, v = c["high"], c["low"], c["close"], c["volume"]
    n = int(rng.integers(3, 30))
    flags = rng.random(cl.shape[0]) < 0.05
    c = dict(c, new_session=flags)
    middle, upper, lower = ind.bollinger(cl, n, 2.0)
    bands = [
        middle,
        upper,
        lower,
        ind.bollinger_percent_b(cl, upper, lower),
        ind.bollinger_bandwidth(middle, upper, lower),
    ]
    return c, [
        ("sma", st.StreamingSMA(n), ("close",), [ind.sma(cl, n)]),
        ("ema", st.StreamingEMA(n), ("close",), [ind.ema(cl, n)]),
        ("rsi", st.StreamingRSI(n), ("close",), [ind.rsi(cl, n)]),
        ("macd", st.StreamingMACD(12, 26, n), ("close",), ind.macd(cl, 12, 26, n)),
        (
            "stochastic",
            st.StreamingStochastic(n, 3, 3),
            ("high", "low", "close"),
            ind.stochastic(h, lo, cl, n, 3, 3),
        ),
        ("atr", st.StreamingATR(n), ("high", "low", "close"), [ind.atr(h, lo, cl, n)]),
        ("bollinger", st.StreamingBollinger(n, 2.0), ("close",), bands),
        (
            "keltner",
            st.StreamingKeltner(n, 10, 1.5),
            ("high", "low", "close"),
            ind.keltner(h, lo, cl, n, 10, 1.5),
        ),
        ("adx", st.StreamingADX(n), ("high", "low", "close"), ind.adx(h, lo, cl, n)),
        (
            "vwap",
            st.StreamingVWAP(n),
            ("high", "low", "close", "volume"),
            [ind.vwap_rolling(h, lo, cl, v, n)],
        ),
        (
            "session_vwap",
            st.StreamingSessionVWAP(),
            ("high", "low", "close", "volume", "new_session"),
            [ind.vwap_session(h, lo, cl, v, flags)],
        ),
        ("log_return", st.StreamingLogReturn(), ("close",), [ind.log_returns(cl)]),
    ]


def _as_rows(values) -> np.ndarray:
    return np.atleast_2d(np.asarray(values, dtype=np.float64).T)


def test_every_streaming_state_equals_its_batch_indicator(rng):
    candles, cases = _cases(random_candles(rng, N_BARS), rng)
    for name, state, inputs, batch in cases:
        columns = [candles[k].tolist() for k in inputs]
        streamed = _as_rows([state.update(*bar) for bar in zip(*columns, strict=True)])
        assert state.n_bars == N_BARS
        for k, expected in enumerate(batch):
            assert_series_close(f"{name}[{k}]", streamed[k], expected, STREAM_REL)


def test_revise_previews_the_open_bar_without_committing(rng):
    candles, cases = _cases(random_candles(rng, 400), rng)
    check_at = set(rng.choice(400, size=40, replace=False).tolist())
    for name, state, inputs, batch in cases:
        columns = [candles[k].tolist() for k in inputs]
        for t, bar in enumerate(zip(*columns, strict=True)):
            if t in check_at:
                # Intermediate ticks of the open bar: perturbed numeric inputs, several revisions.
                for _ in range(3):
                    tick = [
                        x * (1 + 0.01 * rng.standard_normal()) if isinstance(x, float) else x for x in bar
                    ]
                    state.revise(*tick)
                final = _as_rows([state.revise(*bar)])[:, 0]
                expected = np.array([series[t] for series in batch])
                np.testing.assert_array_equal(final, _as_rows([state.update(*bar)])[:, 0], err_msg=name)
                scale = np.nanmax(np.abs(expected), initial=1.0)
                np.testing.assert_allclose(
                    final, expected, rtol=STREAM_REL, atol=STREAM_REL * scale, equal_nan=True, err_msg=name
                )
            else:
                state.update(*bar)
        assert state.n_bars == 400, name


def test_bad_parameters_raise_clear_errors():
    with pytest.raises(ValueError, match="n must be >= 1"):
        st.StreamingEMA(0)
    with pytest.raises(ValueError, match="fast must be < slow"):
        st.StreamingMACD(30, 20, 9)
    with pytest.raises(ValueError, match="k must be a positive finite number"):
        st.StreamingBollinger(20, float("nan"))
    with pytest.raises(ValueError, match="k_smooth must be >= 1"):
        st.StreamingStochastic(14, 0, 3)
