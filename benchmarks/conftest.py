"""Shared benchmark fixtures: randomised models per variant, built once per session, and every peer the
suite compares side by side (reference eager, torch.compile(reference), ONNX Runtime on the exported
reference, the fused model, the inference session)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import convnext_fast
from convnext_fast import reference
from convnext_fast._ext import _C
from convnext_fast.inference import InferenceSession

THREADS = min(2, os.cpu_count() or 1)
C_IN, T = 20, 256


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)
    yield


def pytest_addoption(parser):
    parser.addoption(
        "--cotenant",
        action="store_true",
        help="run one busy co-tenant process (a pure-Python spin loop) for the whole session: latency under "
        "contention; groups get a ' +cotenant' suffix so bench_table.py can pair them with a quiet run",
    )


COTENANT = "import time\nwhile True:\n    time.perf_counter()\n"


@pytest.fixture(scope="session", autouse=True)
def cotenant(request):
    """Start the busy co-tenant (``--cotenant``) before the first benchmark and stop it after the last."""
    if not request.config.getoption("--cotenant"):
        yield False
        return
    proc = subprocess.Popen([sys.executable, "-c", COTENANT])
    try:
        yield True
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def group(cotenant):
    """``group(name)``: the benchmark group name, marked when the co-tenant runs."""
    return lambda name: f"{name} +cotenant" if cotenant else name


@functools.cache
def reference_model(variant: str) -> reference.ConvNeXt1d:
    torch.manual_seed(0)
    model = reference.create(variant, in_chans=C_IN).eval()
    with torch.no_grad():  # layer scale of a trained model, not the 1e-6 init, so no path is trivially cheap
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.1)
    return model


@functools.cache
def window(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).standard_normal((batch, C_IN, T)).astype(np.float32)


@functools.cache
def onnx_session(variant: str):
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp(prefix="convnext_fast_bench_")) / f"{variant}.onnx"
    torch.onnx.export(
        reference_model(variant),
        (torch.from_numpy(window(1)),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@functools.cache
def compiled_model(variant: str):
    return torch.compile(reference_model(variant), dynamic=False)


@functools.cache
def fused_model(variant: str) -> convnext_fast.ConvNeXt1d:
    return convnext_fast.convert(reference_model(variant)).eval()


@functools.cache
def inference_session(variant: str, track_weights: bool = True, adaptive: bool = False) -> InferenceSession:
    return InferenceSession(reference_model(variant), track_weights=track_weights, adaptive_threads=adaptive)


def forward_fn(impl: str, variant: str, batch: int):
    """A zero-argument callable running one forward of ``impl`` on a [batch, 20, 256] window."""
    x_np = window(batch)
    x = torch.from_numpy(x_np)
    if impl == "onnxruntime":
        sess = onnx_session(variant)
        return lambda: sess.run(None, {"x": x_np})
    if impl in ("session", "session-snapshot", "session-adaptive"):
        session = inference_session(
            variant, track_weights=impl == "session", adaptive=impl == "session-adaptive"
        )
        return lambda: session(x_np)
    if impl == "session-1thread":  # the floor under a co-tenant that holds the other core
        session = inference_session(variant, track_weights=False)

        def one_thread():
            before = _C.get_num_threads()
            _C.set_num_threads(1)
            try:
                return session(x_np)
            finally:
                _C.set_num_threads(before)

        return one_thread
    model = {"eager": reference_model, "compile": compiled_model, "fused": fused_model}[impl](variant)

    def run():
        with torch.no_grad():
            return model(x)

    return run


# session-adaptive: the snapshot session with adaptive_threads=True (team size chosen per call from timings),
# the opt-in answer to a busy co-tenant; session-1thread: the snapshot session on one thread, which is what a
# co-tenant holding the other of two cores leaves.
IMPLS = (
    "eager",
    "compile",
    "onnxruntime",
    "fused",
    "session",
    "session-snapshot",
    "session-adaptive",
    "session-1thread",
)
