"""Universe training data: many symbols' model inputs in memory-mapped arrays on disk.

Each symbol's candles become features (the one feature pipeline), then a *per-symbol causal* z-score: every
channel minus its mean over the last ``norm_bars`` bars up to and including this one, over their standard
deviation, clipped. No statistic crosses symbols or looks ahead, so a symbol trading at 30 000 and one at 0.3
give inputs on one scale, and the inputs need no per-fold refit. Optional higher-timeframe channels
(:func:`convnext_fast.features.pipeline.higher_timeframe_features`) are appended before the z-score.

The symbols are written one after another, time-major (``[bars, channels]`` float32), to one file; so are the
targets, closes and bar times. Only one symbol is ever in RAM while building; training reads windows
straight from the page cache. Symbol ``s`` owns global bars ``offsets[s]:offsets[s + 1]`` and a window is
kept only when all its bars are that symbol's: a window never mixes symbols.

Folds are cut on *time* across all symbols (:func:`universe_folds`), so every symbol's test bars are later
than every symbol's training bars. Sampling can be symbol-balanced (:class:`BalancedSampler`), and an
optional symbol embedding is a one-hot channel per symbol appended to each window: through the stem's
patchify convolution it is exactly a learned per-symbol bias added at the stem, and with it off the model
and its checkpoints are those of a single-symbol run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import torch

from ..errors import UserError

MANIFEST = "universe.json"
DEFAULT_NORM_BARS = 512
_STD_FLOOR = 1e-8
FEATURE_CLIP = 10.0


@numba.njit(cache=True, nogil=True)
def _rolling_z(x, bars, clip, out):
    """Sliding-window Welford mean/variance per channel; NaN until ``bars`` finite values are in view."""
    n, c = x.shape
    inv_bars = 1.0 / bars
    for j in range(c):
        mean = 0.0
        m2 = 0.0
        count = 0
        bad = 0
        for t in range(n):
            v = float(x[t, j])
            if math.isfinite(v):
                count += 1
                d = v - mean
                mean += d / count
                m2 += d * (v - mean)
            else:
                bad += 1
            if t >= bars:
                old = float(x[t - bars, j])
                if math.isfinite(old):
                    count -= 1
                    if count == 0:
                        mean = 0.0
                        m2 = 0.0
                    else:
                        d = old - mean
                        mean -= d / count
                        m2 -= d * (old - mean)
                else:
                    bad -= 1
            if bad > 0 or count < bars:
                out[t, j] = np.nan
                continue
            var = max(m2 * inv_bars, 0.0)
            std = math.sqrt(var)
            z = (v - mean) / std if std > _STD_FLOOR else 0.0
            out[t, j] = min(max(z, -clip), clip)


def rolling_zscore(x: np.ndarray, bars: int, clip: float = FEATURE_CLIP) -> np.ndarray:
    """Causal per-channel z-score of ``x [N, C]`` over the last ``bars`` bars (this one included)."""
    if bars < 2:
        raise UserError(f"norm_bars must be >= 2, got {bars}")
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape, dtype=np.float32)
    _rolling_z(x, int(bars), float(clip), out)
    return out


@dataclass(frozen=True)
class UniverseSpec:
    """How a universe's inputs are built (saved in the checkpoint's metadata as ``universe``)."""

    symbols: tuple[str, ...]
    norm_bars: int = DEFAULT_NORM_BARS
    htf: tuple[int, ...] = ()  # higher timeframes as multiples of the bar interval, e.g. (4, 24)
    symbol_embedding: bool = False

    def __post_init__(self):
        if not self.symbols or len(set(self.symbols)) != len(self.symbols):
            raise UserError(f"a universe needs distinct symbols, got {list(self.symbols)}")
        if self.norm_bars < 2:
            raise UserError(f"norm_bars must be >= 2, got {self.norm_bars}")
        if any(f < 2 for f in self.htf) or len(set(self.htf)) != len(self.htf):
            raise UserError(
                f"higher timeframes must be distinct multiples >= 2 of the interval, got {self.htf}"
            )

    def to_dict(self) -> dict:
        return {
            "symbols": list(self.symbols),
            "norm_bars": self.norm_bars,
            "htf": list(self.htf),
            "symbol_embedding": self.symbol_embedding,
        }

    @classmethod
    def from_dict(cls, data: dict) -> UniverseSpec:
        return cls(
            symbols=tuple(data["symbols"]),
            norm_bars=int(data["norm_bars"]),
            htf=tuple(int(f) for f in data.get("htf", ())),
            symbol_embedding=bool(data.get("symbol_embedding", False)),
        )

    def extra_channels(self) -> int:
        """Input channels beyond the feature spec's: one-hot symbol channels (HTF ones are counted apart)."""
        return len(self.symbols) if self.symbol_embedding else 0

    def symbol_id(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise UserError(
                f"symbol {symbol!r} is not in this model's universe ({', '.join(self.symbols)})"
            ) from None


def symbol_inputs(candles, feature_spec, spec: UniverseSpec, interval_ms: int) -> np.ndarray:
    """One symbol's normalised inputs ``[N, C]`` float32 (NaN where not yet defined), without the one-hot
    symbol channels: features (+ higher-timeframe features), then the causal rolling z-score. Training and
    inference both come here."""
    from ..features.pipeline import compute_features, higher_timeframe_features

    c = candles
    parts = [compute_features(c.open, c.high, c.low, c.close, c.volume, spec=feature_spec)]
    for factor in spec.htf:
        parts.append(higher_timeframe_features(c.start_ms, c.open, c.high, c.low, c.close, c.volume,
                                               interval_ms=interval_ms, factor=factor, spec=feature_spec))  # fmt: skip
    features = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    return rolling_zscore(features.T, spec.norm_bars)


def model_inputs(candles, meta, symbol: str | None) -> np.ndarray:
    """``[C_in, N]`` inputs of a universe checkpoint for one symbol's candles: as in training, plus the
    symbol's one-hot channels when the model has a symbol embedding. ``meta`` is the checkpoint's
    :class:`~convnext_fast.train.checkpoint.CheckpointMeta` (read by attribute: this layer sits below it)."""
    from .candles import interval_to_ms

    spec = meta.universe
    inputs = symbol_inputs(candles, meta.feature_spec, spec, interval_to_ms(meta.interval)).T
    if not spec.symbol_embedding:
        return inputs
    if symbol is None:
        raise UserError(
            f"this model has a symbol embedding: name the symbol (one of {', '.join(spec.symbols)})"
        )
    return np.concatenate([inputs, one_hot(spec, np.array([spec.symbol_id(symbol)]), inputs.shape[1])[0]])


def n_feature_channels(feature_spec, spec: UniverseSpec) -> int:
    return feature_spec.n_channels * (1 + len(spec.htf))


def one_hot(spec: UniverseSpec, symbol_ids: np.ndarray, length: int) -> np.ndarray:
    """``[B, S, length]`` float32 one-hot symbol channels (constant along time)."""
    out = np.zeros((len(symbol_ids), len(spec.symbols), length), dtype=np.float32)
    out[np.arange(len(symbol_ids)), symbol_ids, :] = 1.0
    return out


@dataclass(frozen=True)
class UniverseArrays:
    """The memory-mapped universe (see the module doc). ``features`` is ``[C, N]`` (a transposed view of the
    time-major file), as the dataset expects; ``window_symbol[i]`` is the symbol of ``end_idx[i]``."""

    folder: Path
    spec: UniverseSpec
    offsets: np.ndarray
    features: np.ndarray
    targets: np.ndarray
    close: np.ndarray
    start_ms: np.ndarray


def _open(folder: Path, manifest: dict, name: str, mode: str = "r") -> np.memmap:
    info = manifest["arrays"][name]
    return np.memmap(folder / f"{name}.bin", dtype=info["dtype"], mode=mode, shape=tuple(info["shape"]))


def build_universe(
    series,
    folder: str | os.PathLike,
    *,
    spec: UniverseSpec,
    feature_spec,
    interval_ms: int,
    targets_of,
) -> UniverseArrays:
    """Write the universe of ``series`` (``(symbol, candles or a function returning them)`` in
    ``spec.symbols`` order) to ``folder`` and open it. ``targets_of(candles)`` gives one symbol's per-bar
    targets (labels int64 [N] or returns float32 [N, H]). One symbol is in memory at a time."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_chans = n_feature_channels(feature_spec, spec)
    names = ("features", "targets", "close", "start_ms")
    files = {n: open(folder / f"{n}.bin", "wb") for n in names}  # closed in the finally below
    offsets, target_info = [0], None
    try:
        for symbol, candles in series:
            candles = candles() if callable(candles) else candles
            if len(candles) < spec.norm_bars:
                raise UserError(
                    f"{symbol}: {len(candles)} candles are fewer than --norm-bars {spec.norm_bars}"
                )
            inputs = symbol_inputs(candles, feature_spec, spec, interval_ms)
            targets = np.ascontiguousarray(targets_of(candles))
            info = (targets.dtype.str, targets.shape[1:])
            if target_info not in (None, info):
                raise UserError(f"{symbol}: targets {info} differ from the other symbols' {target_info}")
            target_info = info
            files["features"].write(inputs.tobytes())
            files["targets"].write(targets.tobytes())
            files["close"].write(np.asarray(candles.close, dtype=np.float64).tobytes())
            files["start_ms"].write(np.asarray(candles.start_ms, dtype=np.int64).tobytes())
            offsets.append(offsets[-1] + len(candles))
            del inputs, targets, candles
    finally:
        for f in files.values():
            f.close()
    if len(offsets) - 1 != len(spec.symbols):
        raise UserError(f"got {len(offsets) - 1} series for the {len(spec.symbols)} symbols of the universe")
    n = offsets[-1]
    manifest = {
        "spec": spec.to_dict(),
        "offsets": offsets,
        "arrays": {
            "features": {"dtype": "<f4", "shape": [n, n_chans]},
            "targets": {"dtype": target_info[0], "shape": [n, *target_info[1]]},
            "close": {"dtype": "<f8", "shape": [n]},
            "start_ms": {"dtype": "<i8", "shape": [n]},
        },
    }
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return open_universe(folder)


def open_universe(folder: str | os.PathLike) -> UniverseArrays:
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder} holds no readable universe ({exc})") from None
    return UniverseArrays(
        folder=folder,
        spec=UniverseSpec.from_dict(manifest["spec"]),
        offsets=np.asarray(manifest["offsets"], dtype=np.int64),
        features=_open(folder, manifest, "features").T,
        targets=_open(folder, manifest, "targets"),
        close=_open(folder, manifest, "close"),
        start_ms=_open(folder, manifest, "start_ms"),
    )


def usable_windows(
    uni: UniverseArrays, known: np.ndarray, window: int, stride: int, max_windows: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(end_idx, window_symbol)``: global end bars of windows that lie inside one symbol, have finite
    inputs on every bar and a known target; every ``stride``-th bar, the newest ``max_windows`` split
    evenly over the symbols."""
    ends, syms = [], []
    per_symbol = None if max_windows is None else max(1, max_windows // len(uni.spec.symbols))
    for s in range(len(uni.spec.symbols)):
        lo, hi = int(uni.offsets[s]), int(uni.offsets[s + 1])
        if hi - lo < window:
            continue
        finite = np.isfinite(np.asarray(uni.features[:, lo:hi])).all(axis=0)
        # Windows with a non-finite bar anywhere inside: a prefix count of bad bars.
        bad = np.concatenate(([0], np.cumsum(~finite)))
        end = np.arange(window - 1, hi - lo, stride, dtype=np.int64)
        ok = (bad[end + 1] - bad[end + 1 - window] == 0) & known[lo + end]
        end = end[ok] + lo
        if per_symbol is not None:
            end = end[-per_symbol:]
        ends.append(end)
        syms.append(np.full(len(end), s, dtype=np.int64))
    if not ends or sum(len(e) for e in ends) == 0:
        raise UserError("no usable windows in the universe: more bars, a shorter --window or --norm-bars")
    return np.concatenate(ends), np.concatenate(syms)


def universe_folds(
    start_ms: np.ndarray,
    end_idx: np.ndarray,
    *,
    interval_ms: int,
    folds: int,
    window: int,
    horizon: int,
    test_bars: int | None = None,
    val_bars: int | None = None,
    train_bars: int | None = None,
    test_start_ms: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Walk-forward folds cut on time across all symbols: the splits of
    :func:`~convnext_fast.data.splits.walk_forward_splits` laid over the bar-time axis from the first to the
    last usable window end of any symbol; a window belongs to the segment holding its end bar's time."""
    from .splits import walk_forward_splits

    times = np.asarray(start_ms[end_idx], dtype=np.int64)
    t0 = int(times.min())
    pos = (times - t0) // int(interval_ms)
    n = int(pos.max()) + 1
    if test_start_ms is not None:
        first = -(-(int(test_start_ms) - t0) // int(interval_ms))
        if not 0 < first < n:
            raise UserError(
                "--test-start must fall inside the usable data (after the warm-up, before the end)"
            )
        folds, test_bars = 1, n - first
    test_bars = test_bars or n // (2 * max(folds, 2))
    splits = walk_forward_splits(
        n,
        folds,
        test_size=test_bars,
        val_size=val_bars,
        train_size=train_bars,
        horizon=horizon,
        window=window,
    )
    return [
        {name: end_idx[np.isin(pos, getattr(split, name))] for name in ("train", "val", "test")}
        for split in splits
    ]


class UniverseWindowDataset(torch.utils.data.Dataset):
    """A :class:`~convnext_fast.data.dataset.WindowDataset` over the universe's ``[C, N]`` inputs, whose
    batches get the one-hot symbol channels appended when the spec asks for them."""

    def __init__(self, uni: UniverseArrays, targets, end_idx: np.ndarray, window: int):
        from .dataset import WindowDataset

        self.inner = WindowDataset(uni.features, targets, end_idx, window=window)
        self.spec, self.window = uni.spec, window
        self.symbol = np.searchsorted(uni.offsets, self.inner.end_idx, side="right") - 1
        self.y = self.inner.y
        self.end_idx = self.inner.end_idx

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        x, y = self.inner[index]
        if not self.spec.symbol_embedding:
            return x, y
        ids = np.atleast_1d(self.symbol[index])
        extra = torch.from_numpy(one_hot(self.spec, ids, self.window))
        return (torch.cat([x, extra], dim=1) if x.ndim == 3 else torch.cat([x, extra[0]], dim=0)), y


class BalancedSampler(torch.utils.data.Sampler):
    """Each epoch ``len(dataset) // num_replicas`` indices for this rank, drawn with replacement so every
    symbol is sampled equally often however many windows it has; ``set_epoch`` reseeds like
    :class:`torch.utils.data.DistributedSampler`, so a resumed run draws the same batches."""

    def __init__(self, symbol_of_row: np.ndarray, *, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        counts = np.bincount(symbol_of_row)
        self.weights = torch.as_tensor(1.0 / counts[symbol_of_row], dtype=torch.float64)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.per_rank = len(symbol_of_row) // num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        picks = torch.multinomial(
            self.weights, self.per_rank * self.num_replicas, replacement=True, generator=g
        )
        # Python ints in blocks: a whole epoch's list would cost ~36 bytes per window of RAM.
        for block in picks[self.rank :: self.num_replicas].split(65_536):
            yield from block.tolist()
