"""A fixed-size window of the newest feature vectors, updated in O(C) per bar.

The buffer holds every column twice (at ``i`` and ``i + window``), so the newest ``window`` columns are
always one contiguous slice along time: reading the window is a view, never a re-computation or a roll.
"""

from __future__ import annotations

import numpy as np


class WindowRing:
    """The last ``window`` columns of ``[n_channels]`` float32 vectors, oldest first, newest last."""

    def __init__(self, n_channels: int, window: int):
        if n_channels < 1:
            raise ValueError(f"n_channels must be >= 1, got {n_channels}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.n_channels, self.window = int(n_channels), int(window)
        self._buf = np.zeros((self.n_channels, 2 * self.window), dtype=np.float32)
        self._next = 0  # column the next push writes
        self.count = 0  # pushes so far (saturates meaning at >= window)

    @property
    def full(self) -> bool:
        return self.count >= self.window

    def push(self, column: np.ndarray) -> None:
        if column.shape != (self.n_channels,):
            raise ValueError(f"column must have shape ({self.n_channels},), got {column.shape}")
        self._buf[:, self._next] = column
        self._buf[:, self._next + self.window] = column
        self._next = (self._next + 1) % self.window
        self.count += 1

    def view(self) -> np.ndarray:
        """``[n_channels, window]`` view, newest column last; valid until the next push."""
        if not self.full:
            raise RuntimeError(
                f"the window holds {self.count} of {self.window} bars; push more before reading"
            )
        return self._buf[:, self._next : self._next + self.window]

    def batch_into(self, out: np.ndarray) -> np.ndarray:
        """Copy the window into a preallocated C-contiguous ``[1, n_channels, window]`` array."""
        out[0] = self.view()
        return out

    def get_state(self) -> dict:
        """The newest ``min(count, window)`` columns, oldest first, as raw float32 bytes, and the count."""
        n = min(self.count, self.window)
        cols = self._buf[:, self._next + self.window - n : self._next + self.window]
        return {"count": self.count, "columns": np.ascontiguousarray(cols).tobytes()}

    def set_state(self, saved: dict) -> None:
        cols = np.frombuffer(saved["columns"], dtype=np.float32).reshape(self.n_channels, -1)
        if cols.shape[1] > self.window:
            raise ValueError(f"saved window has {cols.shape[1]} columns, more than {self.window}")
        self._next, self.count = 0, 0
        for column in cols.T:
            self.push(column)
        # The saved count stands only if the columns cover this window (saved with a smaller one, the
        # ring holds just what was restored and fills up from there).
        if cols.shape[1] >= min(int(saved["count"]), self.window):
            self.count = int(saved["count"])
