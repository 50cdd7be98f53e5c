"""Model inputs from a feature matrix: zero-copy sliding windows, a torch ``Dataset`` and batch loaders.

Labels live in :mod:`.labels` (with the class ids LONG/SHORT/HOLD/UNKNOWN) and splits in :mod:`.splits`;
their main functions are re-exported here so the dataset API is ``convnext_fast.data.dataset``. Typical use::

    feats = compute_features(o, h, l, c, v)                   # float32 [C, N], NaN in warm-up
    labels = make_labels(c, h, l, spec)                        # int64 [N], -1 unknown
    split = chronological_split(len(c), 0.15, 0.15, horizon=spec.horizon, window=T, embargo=24)
    train = WindowDataset(feats, labels, split.train, window=T)
    weights = class_weights(train.y)                          # training rows only
    for x, y in make_loader(train, 256, train=True, augment=Augment(seed=0)): ...
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from .arg_checks import DatasetArgumentError, check_int
from .labels import LabelSpec, class_weights, make_labels, regression_targets
from .splits import Split, chronological_split, required_purge, walk_forward_splits

__all__ = [
    "LabelSpec",
    "Split",
    "WindowDataset",
    "WindowLoader",
    "chronological_split",
    "class_weights",
    "make_labels",
    "make_loader",
    "regression_targets",
    "required_purge",
    "sliding_windows",
    "walk_forward_splits",
    "window_of",
]

log = logging.getLogger(__name__)

# Rows checked per step when scanning a [M, C, T] windows view for NaN, to bound the temporary mask.
_NAN_SCAN_ROWS = 4096
_NAN_SCAN_BARS = 65536


# The model downsamples by 32 (stem 4 × three stages of 2): a shorter window has no last-stage bar at all.
MIN_WINDOW = 32
DEFAULT_WINDOW = 256  # the trainer's default, assumed for metadata that names no window


def window_of(saved: int | None, override: int | None = None, *, option: str = "--window") -> int:
    """The window length T to cut: ``override`` (a user's ``--window``), else the ``saved`` one (what the
    model was trained on), else :data:`DEFAULT_WINDOW`; at least :data:`MIN_WINDOW` bars."""
    window = override or saved or DEFAULT_WINDOW
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < MIN_WINDOW:
        raise DatasetArgumentError(
            f"{option} must be an integer >= {MIN_WINDOW} (the model's total stride), got {window!r}"
        )
    return int(window)


def sliding_windows(features, window: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``[M, C, window]`` over ``features [C, N]`` as a read-only strided *view* (no copy), newest bar
    last, and ``end_idx int64 [M]``: the bar each window ends at (``window - 1, window - 1 + stride, ...``)."""
    features = np.asarray(features)
    if features.ndim != 2:
        raise DatasetArgumentError(f"features must be [C, N] (channels, bars), got shape {features.shape}")
    window = check_int("window", window, minimum=1)
    stride = check_int("stride", stride, minimum=1)
    if window > features.shape[1]:
        raise DatasetArgumentError(f"window={window} is longer than the {features.shape[1]} bars in features")
    view = np.lib.stride_tricks.sliding_window_view(features, window, axis=1)  # [C, M, window]
    windows = view.transpose(1, 0, 2)[::stride]
    end_idx = np.arange(window - 1, features.shape[1], stride, dtype=np.int64)
    return windows, end_idx


def _bad_bars(features: np.ndarray) -> np.ndarray:
    """``[N]`` True where any channel is non-finite, scanned in column blocks: a ``[C, N]`` boolean mask at
    once would be a quarter of a memory-mapped universe's size in RAM."""
    bad = np.empty(features.shape[1], dtype=bool)
    for lo in range(0, features.shape[1], _NAN_SCAN_BARS):
        bad[lo : lo + _NAN_SCAN_BARS] = ~np.isfinite(features[:, lo : lo + _NAN_SCAN_BARS]).all(axis=0)
    return bad


class WindowDataset(Dataset):
    """``(x [C, T] float32 tensor, y)`` samples, ``y`` being ``targets[end bar]`` (an int64 label or float32
    regression targets).

    ``features`` is either the feature matrix ``[C, N]`` (then ``window`` is required and ``end_idx`` lists the
    wanted end bars, e.g. ``split.train``) or a windows view ``[M, C, T]`` from :func:`sliding_windows` with its
    ``end_idx``. Rows are dropped, and counted in :attr:`dropped`, when the label is -1 or a target NaN
    (``"unlabelled"``), the window has a non-finite feature (``"nan_features"``) or it would start before bar
    0 (``"short_history"``). Indexing with a sequence of indices returns a whole batch ``(x [B, C, T], y [B])``
    in one gather.
    """

    def __init__(self, features, targets, end_idx, *, window: int | None = None):
        features = np.asarray(features)
        targets = np.asarray(targets)
        end_idx = np.asarray(end_idx)
        if end_idx.ndim != 1 or not np.issubdtype(end_idx.dtype, np.integer):
            raise DatasetArgumentError(
                f"end_idx must be a 1-D integer array, got {end_idx.dtype} {end_idx.shape}"
            )
        end_idx = end_idx.astype(np.int64)
        if targets.ndim not in (1, 2):
            raise DatasetArgumentError(
                f"targets must be [N] labels or [N, H] regression targets, got {targets.shape}"
            )
        if len(end_idx) and (end_idx.min() < 0 or end_idx.max() >= len(targets)):
            raise DatasetArgumentError(f"end_idx must lie in [0, {len(targets)}) (the bars of targets)")
        if features.ndim == 2:
            windows, rows, short, bad_window = self._from_matrix(features, end_idx, window)
        elif features.ndim == 3:
            windows, rows, short, bad_window = self._from_windows(features, end_idx, window)
        else:
            raise DatasetArgumentError(
                f"features must be [C, N] or windows [M, C, T], got shape {features.shape}"
            )
        unlabelled = ~self._known(targets[end_idx])
        keep = ~(short | bad_window | unlabelled)
        self.windows = windows
        self.rows = rows[keep]
        self.end_idx = end_idx[keep]
        self.y = targets[self.end_idx]
        self.dropped = {
            "unlabelled": int(np.count_nonzero(unlabelled & ~short & ~bad_window)),
            "nan_features": int(np.count_nonzero(bad_window)),
            "short_history": int(np.count_nonzero(short)),
        }
        log.info("WindowDataset: %s", self.summary())

    @staticmethod
    def _from_matrix(features, end_idx, window):
        if window is None:
            raise DatasetArgumentError("window is required when features is a [C, N] matrix")
        if end_idx.max(initial=-1) >= features.shape[1]:
            raise DatasetArgumentError(f"end_idx must be < {features.shape[1]} (the bars in features)")
        windows, _ = sliding_windows(features, window)
        short = end_idx < window - 1
        rows = np.where(short, 0, end_idx - (window - 1))
        # A window is bad when any bar in it has a non-finite channel: count bad bars with a prefix sum.
        bad_bars = np.concatenate(([0], np.cumsum(_bad_bars(features))))
        bad_window = ~short & (bad_bars[end_idx + 1] - bad_bars[rows] > 0)
        return windows, rows, short, bad_window

    @staticmethod
    def _from_windows(windows, end_idx, window):
        if len(windows) != len(end_idx):
            raise DatasetArgumentError(
                f"end_idx has {len(end_idx)} entries but windows has {len(windows)} rows"
            )
        if window is not None and window != windows.shape[2]:
            raise DatasetArgumentError(f"window={window} but the windows are {windows.shape[2]} bars long")
        bad_window = np.zeros(len(windows), dtype=bool)
        for start in range(0, len(windows), _NAN_SCAN_ROWS):
            chunk = windows[start : start + _NAN_SCAN_ROWS]
            bad_window[start : start + len(chunk)] = ~np.isfinite(chunk).all(axis=(1, 2))
        rows = np.arange(len(windows), dtype=np.int64)
        return windows, rows, np.zeros(len(windows), dtype=bool), bad_window

    @staticmethod
    def _known(targets: np.ndarray) -> np.ndarray:
        if np.issubdtype(targets.dtype, np.integer):
            return targets >= 0 if targets.ndim == 1 else (targets >= 0).all(axis=1)
        return np.isfinite(targets) if targets.ndim == 1 else np.isfinite(targets).all(axis=1)

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {why}" for why, n in self.dropped.items())
        return f"{len(self)} samples kept; dropped {dropped}"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        """An int gives one sample ``(x [C, T], y)``; a sequence/array/slice of ints a batch ``(x [B, C, T], y)``."""
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        picked = self.rows[index]
        # Fancy indexing copies just the requested windows out of the read-only view.
        x = torch.from_numpy(np.ascontiguousarray(self.windows[picked], dtype=np.float32))
        y = self.y[index]
        y = torch.from_numpy(
            np.asarray(y, dtype=np.int64 if np.issubdtype(self.y.dtype, np.integer) else np.float32)
        )
        return x, y


class WindowLoader:
    """Batches ``(x [B, C, T], y)`` from a :class:`WindowDataset`. Augmentation is applied only when ``train``
    is True (and only then can one be given), so validation/test batches are always the stored windows."""

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        *,
        train: bool,
        augment=None,
        shuffle: bool | None = None,
        drop_last: bool = False,
        seed: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if augment is not None and not train:
            raise DatasetArgumentError("augment is for training only: pass train=True or augment=None")
        if augment is not None and not callable(augment):
            raise DatasetArgumentError(f"augment must be callable on a [B, C, T] tensor, got {augment!r}")
        self.train, self.augment = bool(train), augment
        shuffle = self.train if shuffle is None else shuffle
        generator = torch.Generator().manual_seed(
            int(torch.randint(2**62, (1,)).item()) if seed is None else check_int("seed", seed, minimum=0)
        )
        order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        # batch_size=None: the sampler yields whole index lists and the dataset gathers each batch at once.
        self._loader = DataLoader(
            dataset,
            sampler=BatchSampler(order, batch_size, drop_last),
            batch_size=None,
            num_workers=check_int("num_workers", num_workers, minimum=0),
            pin_memory=pin_memory,
        )

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        for x, y in self._loader:
            # Augmenting here, in the caller's process, keeps one seeded stream even with worker processes.
            yield (self.augment(x) if self.augment is not None else x), y


def make_loader(
    dataset: WindowDataset, batch_size: int, *, train: bool, augment=None, **kwargs
) -> WindowLoader:
    """A :class:`WindowLoader`: shuffled and augmented when ``train``, in time order and untouched otherwise."""
    return WindowLoader(dataset, batch_size, train=train, augment=augment, **kwargs)
