"""The fastest forward pass available for one window: ``[1, C_in, T]`` float32 → raw model outputs
(logits or regression values; :mod:`convnext_fast.trading.decision` turns them into signals).

``auto`` is the package's one backend policy (:func:`convnext_fast.backends.choose_backend`) for the device
the model's weights are on: on the CPU the one-call C++ ``InferenceSession`` when the extension is loaded,
on CUDA the fused model (Triton), the reference eager forward otherwise. ``--backend`` forces one and fails
loudly when it cannot run, so a latency figure never silently measures another path. No ``torch.compile``
here: its cold compile alone would blow the startup budget.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..backends import BACKENDS, BackendUnavailable, choose_backend
from ..errors import UserError

PREDICTOR_BACKENDS = BACKENDS  # kept for importers; the names are the backend policy's


def set_threads(n: int) -> None:
    """Threads for torch and for the C++ kernels' OpenMP loops. One bar at a time gains little from a team
    of threads and loses a lot when the CPU is shared (waking a busy team costs milliseconds)."""
    from .._ext import _C

    torch.set_num_threads(max(1, n))
    if _C is not None:
        _C.set_num_threads(max(1, n))


def _pick(model: torch.nn.Module, backend: str) -> str:
    """The backend policy's choice: ``auto`` for the device ``model``'s weights are on; a forced backend on
    its own device (the predictor copies the weights there: the C++ session to the CPU, Triton to CUDA)."""
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    param = next(model.parameters(), None)
    home = {"cpu": "cpu", "triton": "cuda", "reference": "cpu"}
    device = home[backend] if backend in home else param.device.type if param is not None else "cpu"
    try:
        return choose_backend(device, backend)
    except BackendUnavailable as exc:
        raise UserError(f"--backend {backend} cannot run here: {exc}") from None


def _torch_forward(model: torch.nn.Module, device: str) -> Callable[[np.ndarray], np.ndarray]:
    model = model.to(device).eval()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x).to(device)).float().cpu().numpy()

    return forward


def _as_reference(model: torch.nn.Module) -> torch.nn.Module:
    """A plain reference copy (the fused model subclasses it; a copy keeps the caller's model untouched)."""
    from .. import reference

    ref = reference.ConvNeXt1d(**model.config)
    ref.load_state_dict(model.state_dict())
    return ref.eval()


def make_predictor(
    model: torch.nn.Module, backend: str = "auto"
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """``(predict, backend_used)`` where ``predict(x [1, C_in, T] float32) -> raw outputs [1, K]`` float64.

    The CPU backend snapshots the model's weights here: later changes to ``model`` are not seen.
    """
    from .. import model as fused_model

    chosen = _pick(model, backend)
    if chosen == "cpu":
        from ..inference import InferenceSession  # one C++ call per forward

        # The live loop's weights come from a checkpoint and never change: snapshot them and skip the
        # per-call weight check (30–60 µs of cache misses at batch 1, see convnext_fast.inference).
        session = InferenceSession(model, track_weights=False)

        def logits_fn(x: np.ndarray) -> np.ndarray:
            return np.asarray(session(x))

    elif chosen == "triton":
        logits_fn = _torch_forward(fused_model.convert(_as_reference(model), backend="triton"), "cuda")
    else:
        logits_fn = _torch_forward(_as_reference(model), "cpu")

    def predict(x: np.ndarray) -> np.ndarray:
        return logits_fn(x).astype(np.float64)

    return predict, chosen
