"""Low-latency inference: a whole ConvNeXt-1D forward in one call into C++.

``InferenceSession(model)`` copies the model's weights into :class:`convnext_fast._C.PackedModel` once
(re-laid-out for the kernels). Each call then costs one Python→C++ transition instead of a dispatch per op
(a ``torch.library`` op call alone costs ~30–60 µs here, the whole atto forward ~0.6 ms). Every linear
layer runs on weights packed once into panels for the AVX-512 or AVX2 kernel (``csrc/kernels/packed_gemm.cpp``).

Weight changes are noticed (``track_weights=True``, the default): every call compares each parameter's
in-place version counter and storage pointer with those seen at packing time and repacks when any differs
(after an optimizer step, ``load_state_dict``, ``.to()`` ...); a parameter *replaced* on any module
(``block.gamma = nn.Parameter(..)``, ``load_state_dict(assign=True)``) is caught by a global
parameter-registration hook. Writes through ``param.data`` (``p.data.mul_(..)``, old-style EMA code) bypass
autograd's version counter and cannot be seen: call :meth:`InferenceSession.refresh` after them.

The check costs more than its 15 µs in isolation: right after a forward the 128 parameter records of atto
(tensor, version counter, storage) have been evicted from cache by the weights, and at atto batch 1 the
tracking session ran 28–56 µs (4–8%) behind the snapshot one (benchmarks/README.md). A caller whose weights
are fixed (the live loop, which loads a checkpoint once) passes ``track_weights=False``: the session then
snapshots the weights and repacks only on :meth:`~InferenceSession.refresh`. The parameter list is
collected once at packing time either way (walking ``model.parameters()`` on every call cost 177 µs for
atto).

The session always computes eval-mode outputs (no drop path), in float32, whatever the model's
``training`` flag or dtype.

``precision="bf16"`` (opt-in) keeps the blocks' and downsamples' linear weights in bf16: half the bytes to
stream, which is what bounds tiny at batch 1. Activations are rounded to bf16 at each of those GEMMs and
accumulated in fp32, on AVX512_BF16's ``vdpbf16ps`` where the CPU has it (chosen at run time), else with
AVX2 FMAs over the weights widened to fp32 in registers (about fp32's speed: no bf16 dot instruction to
double the multiply-adds), else a portable loop over the same products; the stem, LayerNorms, GELU,
residuals and head stay fp32.
Outputs move by ~1e-3 relative; measured accuracy on real windows is in benchmarks/README.md. The default
``"fp32"`` is unchanged.
"""

from __future__ import annotations

import collections
import operator
import time

import numpy as np
import torch

from . import reference
from ._ext import _C
from .errors import UserError

PRECISIONS = ("fp32", "bf16")

_version_of = operator.attrgetter("_version")

# Bumped whenever any module registers or replaces a parameter anywhere in the process; a session repacks
# when it moved since packing (rare, so a false alarm from an unrelated module only costs one repack).
_registrations = 0


def _count_registration(module, name, param):
    global _registrations
    _registrations += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)


def _signature(params: list[torch.Tensor]) -> tuple:
    return tuple(map(_version_of, params)), tuple(map(torch.Tensor.data_ptr, params))


class InferenceSession:
    """Callable ``session(x)``: ``x`` ``[B, C_in, T]`` (numpy array or tensor) → numpy ``[B, out]`` float32.

    ``track_weights``: repack automatically when the model's weights change (default), or snapshot them
    until :meth:`refresh` (fixed weights, saves the per-call check). ``precision``: ``"fp32"`` (default) or
    ``"bf16"`` weights (see the module docs). ``adaptive_threads=True``: time every call and run on one
    thread while that is faster than the whole team (a busy co-tenant makes every barrier wait for a
    descheduled thread), re-trying the team every few calls (see :class:`_AdaptiveTeam`). Falls back to the model's own eager fp32 forward, always on its
    current weights, when the C++ extension is not built.
    """

    def __init__(
        self,
        model: reference.ConvNeXt1d,
        *,
        track_weights: bool = True,
        precision: str = "fp32",
        adaptive_threads: bool = False,
    ):
        if not isinstance(model, reference.ConvNeXt1d):
            raise TypeError(
                f"model must be a convnext_fast ConvNeXt1d (reference or fused), got {type(model).__name__}"
            )
        if not isinstance(track_weights, bool):
            raise TypeError(f"track_weights must be True or False, got {track_weights!r}")
        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        if not isinstance(adaptive_threads, bool):
            raise TypeError(f"adaptive_threads must be True or False, got {adaptive_threads!r}")
        self._team = (
            _AdaptiveTeam() if adaptive_threads and _C is not None and _C.get_num_threads() > 1 else None
        )
        self.model = model
        self.track_weights = track_weights
        cfg = model.config
        self.in_chans = cfg["in_chans"]
        self.num_outputs = cfg["num_classes"] if cfg["task"] == "classification" else cfg["num_outputs"]
        self._packed = None
        self._params: list[torch.Tensor] = []
        self._signature: tuple = ()
        self._registrations_seen = -1
        if _C is not None:
            self._pack()

    @property
    def uses_cpp(self) -> bool:
        return self._packed is not None

    def refresh(self) -> None:
        """Repack the model's current weights (needed after ``param.data`` writes, or with
        ``track_weights=False`` after any change)."""
        if _C is not None:
            self._pack()

    def _pack(self) -> None:
        cfg = self.model.config
        weights = {
            k: v.detach().to("cpu", torch.float32).contiguous().numpy()
            for k, v in self.model.state_dict().items()
        }
        self._packed = _C.PackedModel(
            cfg["in_chans"],
            cfg["dims"],
            cfg["depths"],
            self.num_outputs,
            reference.LN_EPS,
            weights,
            bf16=self.precision == "bf16",
        )
        self._params = list(self.model.parameters())
        self._signature = _signature(self._params)
        self._registrations_seen = _registrations

    def _as_input(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        if not isinstance(x, np.ndarray):
            raise TypeError(
                f"x must be a numpy array or torch.Tensor [B, {self.in_chans}, T], got {type(x).__name__}"
            )
        if x.ndim != 3:
            raise ValueError(f"x must have shape [B, C_in={self.in_chans}, T]; got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating)):
            raise TypeError(f"x must hold floating-point values, got dtype {x.dtype}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"x has {x.shape[1]} channels (dim 1) but the model was built with in_chans={self.in_chans}"
            )
        if x.shape[0] == 0:
            raise ValueError("x has batch size 0")
        if x.shape[2] < reference.TOTAL_STRIDE:
            raise ValueError(
                f"x has T={x.shape[2]} time steps; the model needs at least {reference.TOTAL_STRIDE}"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        if self._packed is None:
            return self._eager(self._as_input(x))
        if self.track_weights and (
            _registrations != self._registrations_seen or _signature(self._params) != self._signature
        ):
            self._pack()
        # A ready float32 array goes straight to C++ (which checks it and returns None if it is not
        # ready); anything else is converted, or rejected with a message naming the problem, first.
        if self._team is not None:
            return self._team.run(self._forward, x)
        return self._forward(x)

    def _forward(self, x):
        out = self._packed.try_forward(x)
        if out is None:
            x = self._as_input(x)
            out = np.empty((x.shape[0], self.num_outputs), dtype=np.float32)
            self._packed.forward(x, out)  # raises, naming the argument, if C++ still disagrees
        return out

    def _eager(self, x: np.ndarray) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return self.model(torch.from_numpy(x)).float().numpy()
        finally:
            self.model.train(was_training)


class _AdaptiveTeam:
    """Chooses, call by call, between the whole OpenMP team and one thread from measured call times.

    On a 2-vCPU machine with another busy process, a team of two waits at every barrier for whichever
    thread the scheduler parked, and the session's median grows several-fold while one thread keeps
    its quiet speed (benchmarks/README.md, "Contention"). Each team size keeps its last ``WINDOW`` call
    times and the one with the lower median runs; every ``PROBE``-th call runs the other so a change in the
    load is noticed within a few dozen calls. The thread count is set for the call only, then restored.

    The median, not a mean: under load the team's calls are mostly fast with a tail of descheduled ones,
    and a mean that the tail dominates moved atto to one thread although the team's median stayed lower
    (1.77 → 3.08 ms loaded with a decayed mean, benchmarks/README.md). The median is what a caller waits.
    """

    PROBE = 16
    WINDOW = 9
    FIRST = 3

    def __init__(self, full: int | None = None):
        self.full = _C.get_num_threads() if full is None else full
        self.times: dict[int, collections.deque] = {
            n: collections.deque(maxlen=self.WINDOW) for n in (1, self.full)
        }
        self.calls = 0

    def median(self, nt: int) -> float:
        t = sorted(self.times[nt])
        return t[(len(t) - 1) // 2] if t else 0.0

    def choose(self) -> int:
        """The team size for the next call (and count it)."""
        self.calls += 1
        fewest = min(self.times, key=lambda n: len(self.times[n]))
        if len(self.times[fewest]) < self.FIRST:  # a few of each size first: one outlier must not decide
            return fewest
        best = min(self.times, key=self.median)
        if self.calls % self.PROBE:
            return best
        return 1 if best != 1 else self.full

    def record(self, nt: int, elapsed: float) -> None:
        self.times[nt].append(elapsed)

    def run(self, forward, x):
        nt = self.choose()
        before = _C.get_num_threads()
        _C.set_num_threads(nt)
        start = time.perf_counter()
        try:
            return forward(x)
        finally:
            self.record(nt, time.perf_counter() - start)
            _C.set_num_threads(before)
