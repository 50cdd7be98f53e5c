"""Feature speed, side by side: each batch indicator vs TA-Lib on 1e6 bars, the full feature matrix on 1e6
bars, one streaming update of the whole feature vector, and the start of a second process (numba cache).

    pytest benchmarks/bench_features.py --benchmark-only --benchmark-group-by=group

Results and ratios: benchmarks/results_features.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from convnext_fast.features import FeatureSpec, StreamingFeatures, compute_features
from convnext_fast.features import indicators as ind

talib = pytest.importorskip("talib")

N_BARS = 1_000_000


def _candles(n: int) -> dict:
    rng = np.random.default_rng(0)
    close = 30_000.0 * np.exp(np.cumsum(0.003 * rng.standard_normal(n)))
    open_ = np.r_[close[0], close[:-1]]
    wick = np.abs(0.002 * rng.standard_normal((2, n)))
    return {
        "open": open_,
        "high": np.maximum(open_, close) * np.exp(wick[0]),
        "low": np.minimum(open_, close) * np.exp(-wick[1]),
        "close": close,
        "volume": rng.lognormal(3.0, 1.0, n),
    }


C = _candles(N_BARS)
H, L, CL, V = C["high"], C["low"], C["close"], C["volume"]

# (ours, TA-Lib) for the same outputs; ADX's TA-Lib side computes its three outputs with three calls.
PAIRS = {
    "sma": (lambda: ind.sma(CL, 20), lambda: talib.SMA(CL, 20)),
    "ema": (lambda: ind.ema(CL, 21), lambda: talib.EMA(CL, 21)),
    "rsi": (lambda: ind.rsi(CL, 14), lambda: talib.RSI(CL, 14)),
    "macd": (lambda: ind.macd(CL, 12, 26, 9), lambda: talib.MACD(CL, 12, 26, 9)),
    "stochastic": (lambda: ind.stochastic(H, L, CL, 14, 3, 3), lambda: talib.STOCH(H, L, CL, 14, 3, 0, 3, 0)),
    "atr": (lambda: ind.atr(H, L, CL, 14), lambda: talib.ATR(H, L, CL, 14)),
    "bollinger": (lambda: ind.bollinger(CL, 20, 2.0), lambda: talib.BBANDS(CL, 20, 2.0, 2.0, 0)),
    "adx+di": (
        lambda: ind.adx(H, L, CL, 14),
        lambda: (talib.ADX(H, L, CL, 14), talib.PLUS_DI(H, L, CL, 14), talib.MINUS_DI(H, L, CL, 14)),
    ),
}


@pytest.mark.parametrize("impl", ["numba", "talib"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_indicator_1e6(benchmark, name, impl):
    fn = PAIRS[name][0 if impl == "numba" else 1]
    fn()  # compile (or load from the cache) outside the timing
    benchmark.group = f"indicator {name} (1e6 bars)"
    benchmark.pedantic(fn, rounds=15, warmup_rounds=1)


@pytest.mark.parametrize("name", ["vwap_rolling", "keltner"])
def test_indicator_without_talib_twin_1e6(benchmark, name):
    fn = {
        "vwap_rolling": lambda: ind.vwap_rolling(H, L, CL, V, 24),
        "keltner": lambda: ind.keltner(H, L, CL, 20, 10, 2.0),
    }[name]
    fn()
    benchmark.group = "indicators without a TA-Lib twin (1e6 bars)"
    benchmark.pedantic(fn, rounds=10, warmup_rounds=1)


def test_feature_matrix_1e6(benchmark):
    args = (C["open"], H, L, CL, V)
    compute_features(*(a[:1000] for a in args))
    benchmark.group = "feature matrix (20 x 1e6, float32)"
    out = benchmark.pedantic(compute_features, args=args, rounds=5, warmup_rounds=1)
    assert out.shape == (20, N_BARS)


@pytest.mark.parametrize("mode", ["update", "revise"])
def test_streaming_feature_vector(benchmark, mode):
    stream = StreamingFeatures(FeatureSpec())
    stream.extend(*(C[k][:5000] for k in ("open", "high", "low", "close", "volume")))
    bars = iter(zip(*(C[k][5000:].tolist() for k in ("open", "high", "low", "close", "volume")), strict=True))
    step = getattr(stream, mode)
    benchmark.group = "streaming: one 20-channel vector per call from Python"
    benchmark.pedantic(lambda: step(*next(bars)), rounds=20_000, warmup_rounds=100)


_SECOND_PROCESS = textwrap.dedent(
    """
    import json, time
    t0 = time.perf_counter()
    import convnext_fast  # the package (torch, the model); not the features' cost
    t1 = time.perf_counter()
    import numpy as np
    from convnext_fast.features import StreamingFeatures, compute_features
    c = np.linspace(100.0, 110.0, 500)
    compute_features(c, c * 1.01, c * 0.99, c, np.ones(500))
    StreamingFeatures().update(100.0, 101.0, 99.0, 100.5, 3.0)
    t2 = time.perf_counter()
    print(json.dumps({"package_import_s": t1 - t0, "features_first_calls_s": t2 - t1}))
    """
)


def test_second_process_start(benchmark):
    """Wall time of a fresh interpreter that imports the features and makes its first batch and streaming
    calls, after a first process has filled numba's on-disk cache. extra_info splits off the package import."""

    def run() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", _SECOND_PROCESS], capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout)

    run()  # the first process: compiles whatever is not cached yet
    benchmark.group = "second process: import + first calls (numba cache)"
    timings = benchmark.pedantic(run, rounds=3)
    benchmark.extra_info.update(timings)
