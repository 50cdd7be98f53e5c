"""One REST rate limit for every symbol, thread and process on this machine.

Bybit's limit is per IP, so two ``fetch`` processes (or a fetch next to a live loop) that each pace
themselves still add up past it. The limiter is a slot schedule kept in a small file: under an exclusive
``fcntl.flock`` a caller reads the next free time, takes it (or now, if that is later), writes it back plus
one interval, releases the lock and sleeps until its slot. Every process that paces the same host through
the same file therefore shares one schedule, and in any span of ``s`` seconds at most ``s / interval + 1``
requests start, however many processes there are.

The clock is ``time.time()`` (the one clock all processes share); a step of the wall clock at worst delays
or bunches requests once, by the size of the step.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import tempfile
import threading
import time
from pathlib import Path

from ..errors import UserError

STATE_DIR_ENV = "CONVNEXT_FAST_STATE_DIR"
_SLOT = struct.Struct("<d")


def state_dir() -> Path:
    """Where machine-wide state such as the rate-limit schedule lives (``$CONVNEXT_FAST_STATE_DIR`` or
    ``<tmp>/convnext_fast-<uid>``)."""
    env = os.environ.get(STATE_DIR_ENV)
    return Path(env) if env else Path(tempfile.gettempdir()) / f"convnext_fast-{os.getuid()}"


def limiter_path(key: str) -> Path:
    """The schedule file for ``key`` (e.g. the REST host): one file, one shared limit."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_") or "default"
    return state_dir() / f"ratelimit-{safe}.slot"


class SharedRateLimiter:
    """At most one request start per ``interval_s`` across every process that uses ``path``."""

    def __init__(self, path: str | os.PathLike, interval_s: float):
        if not interval_s > 0:
            raise UserError(f"rate-limit interval must be > 0 seconds, got {interval_s}")
        self.path = Path(path)
        self.interval_s = float(interval_s)
        self._thread_lock = threading.Lock()  # flock is per open file; threads of one process queue here
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create the rate-limit folder {self.path.parent} ({exc}); set {STATE_DIR_ENV}"
            ) from None

    def reserve(self) -> float:
        """Take the next free slot and return its time (``time.time()`` seconds), without sleeping."""
        with self._thread_lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.pread(fd, _SLOT.size, 0)
                next_free = _SLOT.unpack(raw)[0] if len(raw) == _SLOT.size else 0.0
                now = time.time()
                # A slot far in the future is a stale file from a clock that stepped back: start afresh.
                if next_free > now + 60.0:
                    next_free = now
                slot = max(now, next_free)
                os.pwrite(fd, _SLOT.pack(slot + self.interval_s), 0)
            finally:
                os.close(fd)  # closing releases the flock
        return slot

    def acquire(self, sleep=time.sleep) -> float:
        """Wait for this caller's slot; returns the seconds waited."""
        wait = self.reserve() - time.time()
        if wait > 0:
            sleep(wait)
        return max(wait, 0.0)
