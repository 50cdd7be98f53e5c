"""From candles to what one walk-forward fold trains on: feature matrix, targets, the windows whose
features and targets are both known, per-fold normalisation and the purge between train and test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from . import inputs
from .normalisation import FEATURE_CLIP, STD_FLOOR, Normalisation


@dataclass(frozen=True)
class PreparedData:
    """Everything the folds share. ``end_idx[i]`` is the newest bar of window ``i`` (ascending);
    ``targets`` are per bar (labels int64 [N] or returns float32 [N, H])."""

    features: np.ndarray  # [C, N] float32, NaN in warm-up
    targets: np.ndarray
    close: np.ndarray  # [N] float64, for the naive baselines
    start_ms: np.ndarray  # [N] int64
    end_idx: np.ndarray  # [M] int64, windows with finite features and known targets
    feature_spec: dict
    label_spec: dict
    lookahead: int  # bars a target looks into the future, hence the purge


def _targets(candles, task: str, label_spec, horizons) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-bar targets, a per-bar 'known' mask and the label look-ahead in bars."""
    if task == "classification":
        labels = inputs.make_labels(candles.close, candles.high, candles.low, label_spec)
        return labels, labels >= 0, int(label_spec.horizon)
    returns = inputs.regression_targets(candles.close, list(horizons))
    return returns, np.isfinite(returns).all(axis=1), int(max(horizons))


def prepare_data(
    candles,
    *,
    task: str,
    window: int,
    stride: int,
    feature_spec,
    label_spec,
    horizons=(1,),
    max_windows: int | None = None,
) -> PreparedData:
    """Features and targets for ``candles`` and the usable windows (every ``stride``-th bar, newest
    ``max_windows`` kept for quick CPU runs)."""
    features = inputs.feature_matrix(candles, feature_spec)
    targets, known, lookahead = _targets(candles, task, label_spec, horizons)
    if features.shape[1] < window:
        raise UserError(f"--window {window} is longer than the data ({features.shape[1]} bars)")
    _, end_idx = inputs.sliding_windows(features, window, stride)
    finite_bar = np.isfinite(features).all(axis=0)
    # A window is usable when its oldest bar is past the warm-up (every later bar then is too) and its
    # target is known.
    usable = finite_bar[end_idx - window + 1] & finite_bar[end_idx] & known[end_idx]
    end_idx = end_idx[usable]
    if max_windows is not None:
        end_idx = end_idx[-max_windows:]
    return PreparedData(
        features=features,
        targets=targets,
        close=np.asarray(candles.close, dtype=np.float64),
        start_ms=np.asarray(candles.start_ms, dtype=np.int64),
        end_idx=np.ascontiguousarray(end_idx, dtype=np.int64),
        feature_spec=feature_spec.to_dict(),
        label_spec=label_spec.to_dict() if label_spec is not None else {"horizons": list(horizons)},
        lookahead=lookahead,
    )


@dataclass(frozen=True)
class UniverseData(PreparedData):
    """:class:`PreparedData` of many symbols (see :mod:`convnext_fast.data.universe`): every array is
    memory-mapped and concatenated over symbols, features are already normalised per symbol, and folds are
    cut on time."""

    universe: object  # data.universe.UniverseArrays
    window_symbol: np.ndarray  # [M] symbol index of each end_idx
    interval_ms: int


def prepare_universe(
    series,
    folder,
    *,
    spec,
    interval_ms: int,
    task: str,
    window: int,
    stride: int,
    feature_spec,
    label_spec,
    horizons=(1,),
    max_windows: int | None = None,
) -> UniverseData:
    """Build the memory-mapped universe of ``series`` (``(symbol, candles or loader)``) in ``folder`` and
    its usable windows (never across two symbols)."""

    def targets_of(candles):
        return _targets(candles, task, label_spec, horizons)[0]

    uni = inputs.build_universe(
        series, folder, spec=spec, feature_spec=feature_spec, interval_ms=interval_ms, targets_of=targets_of
    )
    targets = uni.targets
    known = (
        np.asarray(targets) >= 0 if task == "classification" else np.isfinite(np.asarray(targets)).all(axis=1)
    )
    end_idx, window_symbol = inputs.usable_windows(uni, known, window, stride, max_windows)
    return UniverseData(
        features=uni.features,
        targets=targets,
        close=uni.close,
        start_ms=uni.start_ms,
        end_idx=end_idx,
        feature_spec=feature_spec.to_dict(),
        label_spec=label_spec.to_dict() if label_spec is not None else {"horizons": list(horizons)},
        lookahead=int(label_spec.horizon) if task == "classification" else int(max(horizons)),
        universe=uni,
        window_symbol=window_symbol,
        interval_ms=int(interval_ms),
    )


def input_channels(data: PreparedData) -> int:
    """The model's ``in_chans``: the feature rows, plus a universe's one-hot symbol channels."""
    extra = data.universe.spec.extra_channels() if isinstance(data, UniverseData) else 0
    return int(data.features.shape[0]) + extra


def identity_normalisation(data: UniverseData) -> dict:
    """A universe's inputs are normalised per symbol while they are built; the checkpoint records that (the
    rolling z-score's length) and an identity mean/std for the shared normaliser."""
    n = input_channels(data)
    return {
        "mean": [0.0] * n,
        "std": [1.0] * n,
        "clip": FEATURE_CLIP,
        "rolling_bars": data.universe.spec.norm_bars,
    }


def fold_end_bars(
    data: PreparedData,
    *,
    folds: int,
    window: int,
    test_bars: int | None = None,
    val_bars: int | None = None,
    train_bars: int | None = None,
    test_start_ms: int | None = None,
) -> list[dict[str, np.ndarray]]:
    """Walk-forward folds as ``{"train", "val", "test"}`` arrays of usable window end bars.

    Segments are laid out over the bars from the first to the last usable window, with ``horizon + window``
    unused bars between segments (so no training window or label touches a later segment).
    ``test_start_ms`` instead makes one fold whose test segment is every bar from that time on.
    Default sizes: the test blocks tile the newest half of the span (a quarter for one fold); validation
    blocks are as long as test blocks. A universe's folds are cut on time across all its symbols."""
    if isinstance(data, UniverseData):
        return inputs.universe_folds(
            data.start_ms,
            data.end_idx,
            interval_ms=data.interval_ms,
            folds=folds,
            window=window,
            horizon=data.lookahead,
            test_bars=test_bars,
            val_bars=val_bars,
            train_bars=train_bars,
            test_start_ms=test_start_ms,
        )
    lo, hi = int(data.end_idx[0]), int(data.end_idx[-1])
    n = hi - lo + 1
    if test_start_ms is not None:
        first_test = int(np.searchsorted(data.start_ms, test_start_ms))
        if not lo < first_test <= hi:
            raise UserError(
                "--test-start must fall inside the usable data (after the feature warm-up, before the end)"
            )
        folds, test_bars = 1, hi - first_test + 1
    splits = inputs.walk_forward_splits(
        n,
        folds,
        test_size=test_bars,
        val_size=val_bars,
        train_size=train_bars,
        horizon=data.lookahead,
        window=window,
    )
    return [
        {
            name: data.end_idx[np.isin(data.end_idx, getattr(split, name) + lo)]
            for name in ("train", "val", "test")
        }
        for split in splits
    ]


def normalisation(features: np.ndarray, end_idx: np.ndarray, window: int) -> dict:
    """Per-channel mean/std over the bars the train windows cover (never over val/test bars), in the form
    the checkpoint stores (:class:`~convnext_fast.train.normalisation.Normalisation`)."""
    return Normalisation.fit(features, end_idx, window).to_dict()


def apply_normalisation(features: np.ndarray, norm) -> np.ndarray:
    """``clip((x - mean) / std)`` per channel, float32 (:meth:`Normalisation.apply`); ``norm`` is a
    :class:`Normalisation` or its stored dict."""
    return Normalisation.from_dict(norm).apply(features)


def target_scale(targets: np.ndarray, train_end_idx: np.ndarray) -> list[float]:
    """Per-horizon std of the train targets: regression trains on returns / scale so the loss (and the
    Huber knee at 1) sees unit-sized numbers rather than 1e-3 returns."""
    std = np.nanstd(targets[train_end_idx].astype(np.float64), axis=0)
    return np.where(std > STD_FLOOR, std, 1.0).tolist()
