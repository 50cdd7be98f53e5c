"""Class labels and regression targets from real prices (never from normalised features).

A label at bar ``t`` describes what happens *after* bar ``t`` closes, from the entry price ``close[t]``:
``0`` Long (price rises past the threshold), ``1`` Short (falls past it), ``2`` Hold, ``-1`` unknown.
Unknown means the future bar is not in the data (the last ``horizon`` bars) or the volatility estimate is
still warming up; those rows are never trained or scored on.

Kinds (:class:`LabelSpec`):

- ``"fixed"``: forward log return ``log(close[t+h] / close[t])`` against ``±threshold``.
- ``"volatility"``: the same, against ``±k · vol[t] · sqrt(h)`` where ``vol[t]`` is a causal per-bar
  volatility in log-return units: Wilder ATR / close (``vol="atr"``) or the rolling standard deviation of
  one-bar log returns (``vol="std"``). ``sqrt(h)`` scales a per-bar volatility to the horizon.
- ``"triple_barrier"``: upper/lower barriers at ``close[t] · exp(±k · vol[t] · sqrt(h))`` and a vertical
  barrier ``h`` bars later. The first bar whose high reaches the upper barrier gives Long, whose low reaches
  the lower one gives Short; no touch by ``t+h`` gives Hold. **When one bar touches both barriers the label
  is Hold**: OHLC bars do not tell which was touched first, and guessing would teach the model a coin flip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numba
import numpy as np

from ..features.indicators import atr
from .arg_checks import (
    DatasetArgumentError,
    check_choice,
    check_config_keys,
    check_float,
    check_int,
    check_prices,
)

LONG, SHORT, HOLD, UNKNOWN = 0, 1, 2, -1
NUM_CLASSES = 3
LABEL_KINDS = ("fixed", "volatility", "triple_barrier")
VOL_ESTIMATORS = ("atr", "std")


@dataclass(frozen=True)
class LabelSpec:
    """How labels are made; stored in checkpoints via :meth:`to_dict` so live trading uses the same."""

    kind: str = "fixed"
    horizon: int = 12
    # Used by kind="fixed": log-return threshold (0.005 ≈ 0.5 %).
    threshold: float = 0.005
    # Used by kind="volatility"/"triple_barrier": multiple of the horizon-scaled volatility.
    k: float = 1.0
    vol: str = "atr"
    vol_window: int = 14

    def __post_init__(self):
        check_choice("kind", self.kind, LABEL_KINDS)
        check_int("horizon", self.horizon, minimum=1)
        check_float("threshold", self.threshold, low=0.0, high=np.inf)
        check_float("k", self.k, low=0.0, high=np.inf)
        check_choice("vol", self.vol, VOL_ESTIMATORS)
        check_int("vol_window", self.vol_window, minimum=2)

    @property
    def uses_volatility(self) -> bool:
        return self.kind != "fixed"

    @property
    def needs_high_low(self) -> bool:
        return self.kind == "triple_barrier" or (self.uses_volatility and self.vol == "atr")

    @property
    def warmup(self) -> int:
        """Leading bars whose label is -1 because the volatility estimate is not defined yet."""
        return self.vol_window if self.uses_volatility else 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LabelSpec:
        return cls(**check_config_keys("label spec", data, {f.name for f in fields(cls)}))


def rolling_log_return_std(close: np.ndarray, window: int) -> np.ndarray:
    """Sample std (ddof=1) of the last ``window`` one-bar log returns, ending at each bar; NaN until bar
    ``window`` (the first bar with ``window`` returns behind it)."""
    returns = np.diff(np.log(close))
    out = np.full(len(close), np.nan)
    if len(returns) >= window:
        out[window:] = np.lib.stride_tricks.sliding_window_view(returns, window).std(axis=1, ddof=1)
    return out


def volatility(close, high, low, spec: LabelSpec) -> np.ndarray:
    """The causal per-bar volatility in log-return units that scales thresholds/barriers (NaN in warm-up)."""
    if spec.vol == "atr":
        return atr(high, low, close, spec.vol_window) / close
    return rolling_log_return_std(close, spec.vol_window)


def barrier_widths(close, high=None, low=None, spec: LabelSpec | None = None) -> np.ndarray:
    """The log-return threshold each bar's label is judged against (float64 [N], NaN where undefined)."""
    spec = _check_spec(spec)
    return _widths(*_check_ohlc(close, high, low, spec), spec)


def _widths(close, high, low, spec: LabelSpec) -> np.ndarray:
    if not spec.uses_volatility:
        return np.full(len(close), spec.threshold)
    return spec.k * np.sqrt(spec.horizon) * volatility(close, high, low, spec)


@numba.njit(cache=True)
def _triple_barrier(close, high, low, width, horizon):
    n = len(close)
    out = np.full(n, -1, dtype=np.int64)
    for t in range(n - horizon):
        if not np.isfinite(width[t]):
            continue
        upper = close[t] * np.exp(width[t])
        lower = close[t] * np.exp(-width[t])
        label = 2
        for j in range(t + 1, t + horizon + 1):
            hit_upper = high[j] >= upper
            hit_lower = low[j] <= lower
            if hit_upper and hit_lower:
                break  # both in one bar: order unknown, so Hold (see module docstring)
            if hit_upper:
                label = 0
                break
            if hit_lower:
                label = 1
                break
        out[t] = label
    return out


def make_labels(close, high=None, low=None, spec: LabelSpec | None = None) -> np.ndarray:
    """Labels ``int64 [N]``: 0 Long, 1 Short, 2 Hold, -1 unknown (last ``horizon`` bars, volatility warm-up).

    ``high``/``low`` are needed for ATR volatility and triple-barrier labels; they may be None otherwise.
    """
    spec = _check_spec(spec)
    close, high, low = _check_ohlc(close, high, low, spec)
    width = _widths(close, high, low, spec)
    if spec.kind == "triple_barrier":
        return _triple_barrier(close, high, low, width, spec.horizon)
    labels = np.full(len(close), UNKNOWN, dtype=np.int64)
    h = spec.horizon
    if len(close) <= h:
        return labels
    forward = np.log(close[h:] / close[:-h])
    known = np.isfinite(width[:-h])
    decided = np.where(forward > width[:-h], LONG, np.where(forward < -width[:-h], SHORT, HOLD))
    labels[:-h] = np.where(known, decided, UNKNOWN)
    return labels


def regression_targets(close, horizons) -> np.ndarray:
    """Forward log returns ``log(close[t+h] / close[t])`` for each horizon: float32 ``[N, H]``, NaN where
    ``t + h`` is past the end of the data."""
    close = check_prices("close", close)
    horizons = [horizons] if np.isscalar(horizons) else list(horizons)
    if not horizons:
        raise DatasetArgumentError("horizons must name at least one horizon")
    horizons = [check_int(f"horizons[{i}]", h, minimum=1) for i, h in enumerate(horizons)]
    log_close = np.log(close)
    out = np.full((len(close), len(horizons)), np.nan, dtype=np.float32)
    for column, h in enumerate(horizons):
        if h < len(close):
            out[:-h, column] = log_close[h:] - log_close[:-h]
    return out


def class_weights(labels, train_idx=None, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Balanced weights ``n / (num_classes · count_c)`` as float32 ``[num_classes]``, counted on the training
    rows only: pass the training labels, or all labels with ``train_idx`` (e.g. ``split.train``).
    Unknown labels (-1) are ignored; a class absent from training gets weight 0 (it has no rows to weigh)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetArgumentError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if train_idx is not None:
        labels = labels[np.asarray(train_idx, dtype=np.int64)]
    out_of_range = (labels < UNKNOWN) | (labels >= num_classes)
    if out_of_range.any():
        raise DatasetArgumentError(
            f"labels must be in [-1, {num_classes - 1}], found {labels[out_of_range][0]}"
        )
    known = labels[labels >= 0]
    if len(known) == 0:
        raise DatasetArgumentError("labels has no known (>= 0) training label to weigh classes by")
    counts = np.bincount(known, minlength=num_classes).astype(np.float64)
    weights = np.divide(len(known), num_classes * counts, out=np.zeros(num_classes), where=counts > 0)
    return weights.astype(np.float32)


def _check_spec(spec) -> LabelSpec:
    if spec is None:
        return LabelSpec()
    if not isinstance(spec, LabelSpec):
        raise DatasetArgumentError(
            f"spec must be a LabelSpec (LabelSpec.from_dict reads a dict), got {type(spec).__name__}"
        )
    return spec


def _check_ohlc(close, high, low, spec: LabelSpec):
    close = check_prices("close", close)
    if spec.needs_high_low:
        for name, values in (("high", high), ("low", low)):
            if values is None:
                raise DatasetArgumentError(
                    f"{name} is required for kind={spec.kind!r}, vol={spec.vol!r} labels"
                )
        high, low = check_prices("high", high, len(close)), check_prices("low", low, len(close))
    return close, high, low
