"""Universe data: windows never mix symbols, inputs are causal across symbols and timeframes, folds are
cut on time across symbols, sampling is symbol-balanced, and RAM stays bounded (measured in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from convnext_fast.data.candles import Candles
from convnext_fast.data.labels import LabelSpec, make_labels
from convnext_fast.data.synthetic import synthetic_ohlcv
from convnext_fast.data.universe import (
    BalancedSampler,
    UniverseSpec,
    UniverseWindowDataset,
    build_universe,
    rolling_zscore,
    symbol_inputs,
    universe_folds,
    usable_windows,
)
from convnext_fast.errors import UserError
from convnext_fast.features.pipeline import FeatureSpec, compute_features, higher_timeframe_features
from tests.child_env import child_env

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
SPEC = LabelSpec(horizon=4)


def _candles(n: int, seed: int, start_ms: int) -> Candles:
    bars = synthetic_ohlcv(n, seed=seed, start_ms=start_ms)
    bars.pop("regime")
    return Candles(**bars)


def _labels(c):
    return make_labels(c.close, c.high, c.low, SPEC)


@pytest.fixture
def ragged(rng):
    """Three symbols listed at different times (one mid 4h-bucket), all trading up to the same last bar."""
    base = 1_600_000_000_000 - 1_600_000_000_000 % (4 * HOUR)
    lengths = {"AAA": 2400, "BBB": int(rng.integers(1500, 1800)), "CCC": int(rng.integers(1200, 1400)) | 1}
    return {s: _candles(n, int(rng.integers(2**31)), base + (2400 - n) * HOUR) for s, n in lengths.items()}


def _build(series, tmp_path, **spec):
    uspec = UniverseSpec(symbols=tuple(series), norm_bars=spec.pop("norm_bars", 100), **spec)
    fs = FeatureSpec()
    return build_universe(series.items(), tmp_path / "u", spec=uspec, feature_spec=fs, interval_ms=HOUR,
                          targets_of=_labels)  # fmt: skip


@pytest.mark.slow
def test_windows_never_mix_symbols_and_equal_the_symbols_own_inputs(ragged, tmp_path, rng):
    uni = _build(ragged, tmp_path, htf=(4,), symbol_embedding=True)
    window = 64
    known = np.asarray(uni.targets) >= 0
    end_idx, sym = usable_windows(uni, known, window, 1, None)
    for s in range(3):  # every window lies inside its symbol's bars
        mine = end_idx[sym == s]
        assert mine.min() - window + 1 >= uni.offsets[s] and mine.max() < uni.offsets[s + 1]
    ds = UniverseWindowDataset(uni, uni.targets, end_idx, window)
    assert np.array_equal(ds.symbol, sym)
    pick = rng.choice(len(ds), size=40, replace=False)
    x, y = ds[pick]
    fs = FeatureSpec()
    own = {s: symbol_inputs(c, fs, uni.spec, HOUR) for s, c in ragged.items()}
    for row, i in enumerate(pick):
        s = int(sym[i])
        name = uni.spec.symbols[s]
        local = int(end_idx[i] - uni.offsets[s])
        expect = own[name][local - window + 1 : local + 1].T
        assert np.array_equal(x[row, : expect.shape[0]].numpy(), expect)
        onehot = x[row, expect.shape[0] :].numpy()
        assert np.all(onehot[s] == 1.0) and onehot.sum() == window
        assert y[row] == _labels(ragged[name])[local]


def test_inputs_are_causal_across_symbols_and_timeframes(ragged, tmp_path, rng):
    """Changing one symbol's bars after t (and another symbol entirely) leaves every input at bars <= t."""
    fs = FeatureSpec()
    spec = UniverseSpec(symbols=("AAA",), norm_bars=100, htf=(4, 24))
    a = _candles(6000, int(rng.integers(2**31)), 1_600_000_000_000)  # the 1d channels warm up for ~200 days
    t = int(rng.integers(5300, len(a) - 50))
    scale = np.ones(len(a))
    scale[t + 1 :] = np.exp(rng.normal(0, 0.05, len(a) - t - 1))
    later = np.arange(len(a)) > t
    wider, busier = np.where(later, 1.01, 1.0), np.where(later, 3.0, 1.0)
    future = Candles(
        a.start_ms,
        a.open * scale,
        a.high * scale * wider,
        a.low * scale,
        a.close * scale,
        a.volume * busier,
        a.turnover,
    )
    before, after = symbol_inputs(a, fs, spec, HOUR), symbol_inputs(future, fs, spec, HOUR)
    assert np.isfinite(before[t]).all()
    assert np.array_equal(before[: t + 1], after[: t + 1], equal_nan=True)
    assert not np.allclose(before[t + 30 :], after[t + 30 :], equal_nan=True), "the change must show later"
    # In a universe, another symbol's bars never reach this one's inputs.
    a = ragged["AAA"]
    one = _build({"AAA": a, "BBB": ragged["BBB"]}, tmp_path / "1", htf=(4,))
    two = _build({"AAA": a, "BBB": ragged["CCC"]}, tmp_path / "2", htf=(4,))
    n = len(a)
    assert np.array_equal(np.asarray(one.features[:, :n]), np.asarray(two.features[:, :n]), equal_nan=True)


def test_higher_timeframe_bar_is_used_only_once_closed(rng):
    fs = FeatureSpec()
    c = _candles(2000, int(rng.integers(2**31)), 1_600_000_000_000 - 1_600_000_000_000 % (4 * HOUR) + HOUR)
    htf = higher_timeframe_features(c.start_ms, c.open, c.high, c.low, c.close, c.volume, interval_ms=HOUR,
                                    factor=4, spec=fs)  # fmt: skip
    # Reference: aggregate the 4h bars by hand and compute their features.
    bucket = c.start_ms // (4 * HOUR)
    ids = np.unique(bucket)
    agg = [(c.open[bucket == b][0], c.high[bucket == b].max(), c.low[bucket == b].min(), c.close[bucket == b][-1],
            c.volume[bucket == b].sum()) for b in ids]  # fmt: skip
    ref = compute_features(*np.array(agg).T, spec=fs)
    for t in rng.choice(np.arange(1000, 2000), size=30, replace=False):
        b = int(np.searchsorted(ids, bucket[t]))
        closed = b if (c.start_ms[t] + HOUR) % (4 * HOUR) == 0 else b - 1
        assert np.array_equal(htf[:, t], ref[:, closed])
    # The first 4h bucket (3 bars: the data starts mid-bucket) closes at bar 2: nothing is known before.
    assert np.isnan(htf[:, :2]).all() and np.array_equal(htf[:, 2], ref[:, 0], equal_nan=True)


def test_rolling_zscore_matches_a_direct_computation(rng):
    x = rng.normal(5, 3, size=(600, 3)).astype(np.float32) * np.array([1, 100, 1e-3], dtype=np.float32)
    x[:17, 1] = np.nan
    z = rolling_zscore(x, 50, clip=4.0)
    for t in rng.choice(np.arange(66, 600), size=25, replace=False):
        w = x[t - 49 : t + 1].astype(np.float64)
        ref = np.clip((w[-1] - w.mean(axis=0)) / w.std(axis=0), -4, 4)
        assert np.allclose(z[t], ref, atol=1e-4)
    assert np.isnan(z[:49]).all() and np.isnan(z[: 17 + 49, 1]).all() and np.isfinite(z[17 + 49 :]).all()


def test_folds_are_cut_on_time_across_symbols(ragged, tmp_path):
    uni = _build(ragged, tmp_path)
    window, horizon = 64, SPEC.horizon
    end_idx, _ = usable_windows(uni, np.asarray(uni.targets) >= 0, window, 1, None)
    folds = universe_folds(uni.start_ms, end_idx, interval_ms=HOUR, folds=3, window=window, horizon=horizon)
    t = np.asarray(uni.start_ms)
    for fold in folds:
        for early, late in (("train", "val"), ("val", "test")):
            # Every symbol's later segment starts after every symbol's earlier windows and labels end.
            gap = (t[fold[late]].min() - t[fold[early]].max()) // HOUR
            assert gap > horizon + window - 1
    # The newest test block holds every symbol (they all trade to the same last bar).
    assert len(set(np.searchsorted(uni.offsets, folds[-1]["test"], side="right").tolist())) == 3


def test_balanced_sampler_draws_symbols_equally(rng):
    sym = np.repeat([0, 1, 2], [5000, 500, 50])
    sampler = BalancedSampler(sym, seed=int(rng.integers(1000)))
    counts = np.bincount(sym[list(sampler)], minlength=3)
    assert np.all(np.abs(counts / counts.sum() - 1 / 3) < 0.03), counts
    sampler.set_epoch(1)
    again = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == again
    ranks = [list(BalancedSampler(sym, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(sym) // 2 and ranks[0] != ranks[1]


def test_bad_universe_arguments_are_named(tmp_path, ragged):
    with pytest.raises(UserError, match="distinct symbols"):
        UniverseSpec(symbols=("A", "A"))
    with pytest.raises(UserError, match="higher timeframes"):
        UniverseSpec(symbols=("A",), htf=(1,))
    with pytest.raises(UserError, match="fewer than --norm-bars"):
        _build({"AAA": ragged["AAA"][:50]}, tmp_path)


_MEASURE = r"""
import itertools, json, sys, threading, time
import numpy as np
from convnext_fast.data.synthetic import synthetic_ohlcv
from convnext_fast.data.candles import Candles
from convnext_fast.data.labels import LabelSpec, make_labels
from convnext_fast.data.universe import UniverseSpec, UniverseWindowDataset, build_universe, usable_windows, BalancedSampler
from convnext_fast.features.pipeline import FeatureSpec

n_sym, bars, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
peak = [0]
def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
def watch():
    while True:
        peak[0] = max(peak[0], rss_anon()); time.sleep(0.002)
threading.Thread(target=watch, daemon=True).start()
def load(i):
    def f():
        b = synthetic_ohlcv(bars, seed=i); b.pop("regime"); return Candles(**b)
    return f
spec = UniverseSpec(symbols=tuple(f"S{i}" for i in range(n_sym)), norm_bars=256, htf=(4,))
lab = LabelSpec(horizon=4)
uni = build_universe(((s, load(i)) for i, s in enumerate(spec.symbols)), folder, spec=spec,
                     feature_spec=FeatureSpec(), interval_ms=3_600_000,
                     targets_of=lambda c: make_labels(c.close, c.high, c.low, lab))
end, sym = usable_windows(uni, np.asarray(uni.targets) >= 0, 64, 1, None)
ds = UniverseWindowDataset(uni, uni.targets, end, 64)
order = iter(BalancedSampler(ds.symbol, seed=0))
for _ in range(8_000 // 256):
    x, y = ds[list(itertools.islice(order, 256))]
time.sleep(0.02)
vm = [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"peak_anon": peak[0], "vm_hwm": vm, "features_bytes": int(uni.features.nbytes)}))
"""


def _measure(n_sym: int, bars: int, folder: Path) -> dict:
    env = child_env()
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(n_sym), str(bars), str(folder)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ram_stays_bounded_as_symbols_grow(tmp_path):
    """Peak anonymous memory (what the machine cannot page back to the file) hardly grows from 2 to 12
    symbols: features live in the memory-mapped file, one symbol is built at a time."""
    small, big = _measure(2, 20_000, tmp_path / "a"), _measure(12, 20_000, tmp_path / "b")
    per_symbol = big["features_bytes"] / 12
    assert big["features_bytes"] > 6 * small["features_bytes"] - 1
    # Holding the 10 extra symbols' inputs in RAM would add 10 * per_symbol; what does grow are the
    # per-window index arrays (tens of bytes per bar, against 4 bytes x 40 channels for the inputs).
    assert big["peak_anon"] - small["peak_anon"] < 0.5 * 10 * per_symbol, (small, big, per_symbol)
