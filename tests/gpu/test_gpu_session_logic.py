"""CudaGraphSession's bookkeeping on CPU, with CUDA-graph capture replaced by a recorder that replays by
re-running the captured function (as a graph re-reads its static input and the parameters' memory):
static input/output buffers, one capture per shape, re-capture when a parameter is replaced, errors.
The real capture runs only in tests/gpu/test_triton_cuda.py, on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from convnext_fast import reference
from convnext_fast.errors import UserError
from convnext_fast.gpu_session import CudaGraphSession

# drop path off: the recorder replays by re-running Python in the caller's (training) mode, where a real
# graph replays the eval-mode kernels it captured
SMALL = {
    "in_chans": 5,
    "dims": (8, 16, 24, 32),
    "depths": (1, 1, 1, 1),
    "layer_scale_init": 0.5,
    "drop_path_rate": 0.0,
}


class Recorder:
    def __init__(self):
        self.warmups = self.captures = self.replays = 0

    def warm_up(self, fn, iterations):
        self.warmups += 1
        for _ in range(iterations):
            fn()

    def capture(self, fn):
        self.captures += 1
        out = fn()

        def replay():
            self.replays += 1
            out.copy_(fn())

        return replay, out

    def synchronize(self):
        pass


@pytest.fixture
def model():
    torch.manual_seed(0)
    return reference.ConvNeXt1d(**SMALL).train()


def expected(model, x) -> np.ndarray:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.as_tensor(x)).numpy()
    model.train(was)
    return out


def test_replays_read_the_static_input_and_return_fresh_arrays(model):
    rec = Recorder()
    session = CudaGraphSession(model, warmup=1, graphs=rec)
    x1, x2 = torch.randn(1, 5, 64), torch.randn(1, 5, 64)
    out1 = session(x1)
    kept = out1.copy()
    out2 = session(x2.numpy())
    assert rec.captures == 1 and rec.replays == 2 and rec.warmups == 1
    np.testing.assert_allclose(out1, expected(model, x1), rtol=1e-6)
    np.testing.assert_allclose(out2, expected(model, x2), rtol=1e-6)
    np.testing.assert_array_equal(out1, kept)  # not a view of the static output
    assert model.training  # the caller's mode is restored


def test_one_graph_per_shape_and_a_bound(model):
    rec = Recorder()
    session = CudaGraphSession(model, warmup=1, graphs=rec, max_shapes=2)
    session(torch.randn(1, 5, 64))
    session(torch.randn(2, 5, 64))
    session(torch.randn(1, 5, 64))
    assert rec.captures == 2 and session.shapes == [(1, 5, 64), (2, 5, 64)]
    with pytest.raises(UserError, match="max_shapes"):
        session(torch.randn(1, 5, 96))


def test_replaced_parameter_triggers_recapture_in_place_update_does_not(model):
    rec = Recorder()
    session = CudaGraphSession(model, warmup=1, graphs=rec)
    x = torch.randn(1, 5, 64)
    session(x)
    with torch.no_grad():
        model.head.fc.weight.mul_(2.0)  # same storage: a graph sees it without re-capture
    np.testing.assert_allclose(session(x), expected(model, x), rtol=1e-6)
    assert rec.captures == 1
    model.head.fc.weight = nn.Parameter(torch.randn_like(model.head.fc.weight))
    np.testing.assert_allclose(session(x), expected(model, x), rtol=1e-6)
    assert rec.captures == 2


def test_untracked_weights_wait_for_refresh(model):
    rec = Recorder()
    session = CudaGraphSession(model, warmup=1, graphs=rec, track_weights=False)
    x = torch.randn(1, 5, 64)
    session(x)
    model.head.fc.weight = nn.Parameter(torch.randn_like(model.head.fc.weight))
    session(x)
    assert rec.captures == 1
    session.refresh()
    np.testing.assert_allclose(session(x), expected(model, x), rtol=1e-6)
    assert rec.captures == 2


def test_input_mistakes_get_clear_errors(model):
    session = CudaGraphSession(model, warmup=1, graphs=Recorder())
    with pytest.raises(ValueError, match="channels"):
        session(torch.randn(1, 4, 64))
    with pytest.raises(ValueError, match="channels"):
        session(np.zeros((1, 4, 64), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 32"):
        session(torch.randn(1, 5, 16))
    with pytest.raises(TypeError, match="floating-point"):
        session(torch.zeros(1, 5, 64, dtype=torch.int64))
    assert session.shapes == []


def test_a_cpu_model_without_a_graph_backend_is_refused(model):
    with pytest.raises(UserError, match="CUDA"):
        CudaGraphSession(model)
