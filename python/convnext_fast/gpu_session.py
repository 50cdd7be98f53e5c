"""Low-overhead GPU inference: a whole ConvNeXt-1D forward replayed from a CUDA graph.

At B = 1 a forward on the Triton backend is launch-bound: 2–3 Triton launches per block at ~9–15 µs each
from Python (docs/gpu_performance.md), plus casts and dispatch. ``CudaGraphSession(model)`` captures the
model's forward once per input shape into a CUDA graph over static input and output buffers; each call
then copies the input in, replays the graph (one launch for the whole network) and copies the logits out.

Same interface as the CPU :class:`convnext_fast.inference.InferenceSession`: ``session(x)`` with ``x``
``[B, C_in, T]`` (numpy array or tensor, on any device) → numpy ``[B, out]`` float32, eval-mode outputs,
``track_weights`` and :meth:`~CudaGraphSession.refresh`. What a graph cannot follow: it reads the
parameters' memory at replay, so in-place weight updates (an optimizer step, ``copy_``) are seen as they
are; a parameter *replaced* by a new tensor (``load_state_dict(assign=True)``, ``.to()``, assigning a new
``nn.Parameter``) is not, and is caught (with ``track_weights=True``) by comparing storage pointers and the
parameter-registration counter before every call, which triggers a re-capture.

**Not yet run on a GPU**: no device was lent to this project when this was written; its bookkeeping
(static buffers, shape checks, re-capture) is tested on CPU with graph capture replaced by a recorder
(tests/gpu/test_gpu_session_logic.py), and tests/gpu/test_triton_cuda.py runs it for real when CUDA is
present.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from . import inference, reference
from .errors import UserError


class CudaGraphs:
    """The CUDA-graph calls the session makes, in one place so tests can substitute a recorder."""

    @staticmethod
    def warm_up(fn: Callable[[], torch.Tensor], iterations: int) -> None:
        """Run ``fn`` on a side stream first, as capture requires: the Triton autotuner times its configs
        and lazy CUDA initialisation happens here, outside the graph."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(iterations):
                fn()
        torch.cuda.current_stream().wait_stream(stream)

    @staticmethod
    def capture(fn: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        """Record ``fn`` into a graph → (replay, the static output tensor the replays write)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        return graph.replay, out

    @staticmethod
    def synchronize() -> None:
        torch.cuda.synchronize()


class CudaGraphSession:
    """Callable ``session(x)``: ``x`` ``[B, C_in, T]`` → numpy ``[B, out]`` float32, computed by replaying a
    CUDA graph of ``model``'s eval-mode forward (in the model's own dtype and device).

    One graph per input shape, captured at its first call (``max_shapes`` at most, so a caller feeding
    ever-new shapes gets an error instead of unbounded graph memory). ``track_weights``: re-capture when a
    parameter is replaced (default); ``False`` trusts the weights' storage until :meth:`refresh`.
    """

    def __init__(
        self,
        model: reference.ConvNeXt1d,
        *,
        track_weights: bool = True,
        max_shapes: int = 4,
        warmup: int = 3,
        graphs: CudaGraphs | None = None,
    ):
        if not isinstance(model, reference.ConvNeXt1d):
            raise TypeError(
                f"model must be a convnext_fast ConvNeXt1d (reference or fused), got {type(model).__name__}"
            )
        if not isinstance(track_weights, bool):
            raise TypeError(f"track_weights must be True or False, got {track_weights!r}")
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be >= 1, got {max_shapes}")
        param = next(model.parameters())
        if graphs is None and param.device.type != "cuda":
            raise UserError(
                f"CudaGraphSession needs a model on a CUDA device (it is on {param.device}); "
                "use model.inference_session() on CPU"
            )
        self.model = model
        self.track_weights = track_weights
        self.max_shapes = max_shapes
        self.warmup = warmup
        self._graphs = graphs or CudaGraphs()
        self.device, self.dtype = param.device, param.dtype
        cfg = model.config
        self.in_chans = cfg["in_chans"]
        self.num_outputs = cfg["num_classes"] if cfg["task"] == "classification" else cfg["num_outputs"]
        # shape → (static input, replay, static output)
        self._captured: dict[tuple[int, ...], tuple[torch.Tensor, Callable[[], None], torch.Tensor]] = {}
        self._params: list[torch.Tensor] = []
        self._pointers: tuple[int, ...] = ()
        self._registrations_seen = -1

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Input shapes with a captured graph."""
        return list(self._captured)

    def refresh(self) -> None:
        """Drop every graph; the next call re-captures on the model's current parameters."""
        self._captured.clear()

    def _weights_moved(self) -> bool:
        return (
            inference._registrations != self._registrations_seen
            or tuple(p.data_ptr() for p in self._params) != self._pointers
        )

    def _capture(self, shape: tuple[int, ...]):
        if len(self._captured) >= self.max_shapes:
            raise UserError(
                f"CudaGraphSession already holds graphs for {self.max_shapes} input shapes {self.shapes}; "
                f"got {shape}: pad inputs to one shape, or raise max_shapes"
            )
        static_in = torch.zeros(shape, device=self.device, dtype=self.dtype)
        was_training = self.model.training
        self.model.eval()

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return self.model(static_in)

        try:
            self._graphs.warm_up(forward, self.warmup)
            replay, static_out = self._graphs.capture(forward)
        finally:
            self.model.train(was_training)
        self._params = list(self.model.parameters())
        self._pointers = tuple(p.data_ptr() for p in self._params)
        self._registrations_seen = inference._registrations
        self._captured[shape] = (static_in, replay, static_out)
        return self._captured[shape]

    def _check(self, x: np.ndarray | torch.Tensor) -> tuple[int, ...]:
        if isinstance(x, torch.Tensor):
            reference.check_input(x, self.in_chans)
            if x.shape[2] < reference.TOTAL_STRIDE:
                raise ValueError(
                    f"x has T={x.shape[2]} time steps; the model needs at least {reference.TOTAL_STRIDE}"
                )
            return tuple(x.shape)
        # numpy (or a mistake): the CPU session's checks, one home for their messages
        return inference.InferenceSession._as_input(self, x).shape

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        shape = self._check(x)
        if self.track_weights and self._captured and self._weights_moved():
            self.refresh()
        entry = self._captured.get(shape) or self._capture(shape)
        static_in, replay, static_out = entry
        source = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        with torch.no_grad():
            static_in.copy_(source)
        replay()
        # a fresh host array: the static output is overwritten by the next replay
        return static_out.float().cpu().numpy().copy()
