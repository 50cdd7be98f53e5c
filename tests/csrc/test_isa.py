"""The ISA dispatch of csrc/kernels/isa.h from Python: the levels this CPU runs, the limit tests use to force
a lower variant (restored afterwards, unknown names rejected), every level giving the same model within fp32
tolerance, and a limit changed while kernels run on another thread never corrupting a result."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from convnext_fast import inference
from convnext_fast._ext import _C, isa_limit
from tests.helpers import TOLERANCE, assert_close
from tests.test_inference import expected, model

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")

LEVELS = ("scalar", "avx2", "avx512", "avx512_bf16")


def test_supported_levels_are_ordered_and_best_is_the_default():
    supported = _C.supported_isas()
    assert supported == list(LEVELS[: len(supported)]), "levels must be a prefix of the ordered list"
    assert supported[0] == "scalar"
    assert _C.best_isa() == supported[-1]
    assert set(supported) <= set(_C.compiled_isas())
    assert _C.isa_limit() == "avx512_bf16" and _C.isa() == _C.best_isa()


def test_limit_caps_the_level_and_is_restored():
    best = _C.best_isa()
    for level in LEVELS:
        with isa_limit(level) as running:
            # the lower of the limit and what the CPU has
            assert running == _C.isa() == min(level, best, key=LEVELS.index)
            assert _C.isa_limit() == level
        assert _C.isa_limit() == "avx512_bf16"
    with pytest.raises(RuntimeError, match="boom"), isa_limit("scalar"):
        raise RuntimeError("boom")
    assert _C.isa() == best


def test_unknown_level_names_the_valid_ones():
    with pytest.raises(
        ValueError, match=r"unknown ISA level 'sse4'.*'scalar', 'avx2', 'avx512', 'avx512_bf16'"
    ):
        _C.set_isa_limit("sse4")
    assert _C.isa_limit() == "avx512_bf16"


@pytest.mark.parametrize("level", LEVELS[:3])
def test_every_level_matches_the_reference(level):
    if level not in _C.supported_isas():
        pytest.skip(f"this CPU has no {level}")
    m = model()
    x = torch.randn(3, 20, 75)
    with isa_limit(level):
        session = inference.InferenceSession(m)
        out = session(x)
    assert session.uses_cpp
    assert_close(f"session at {level}", expected(m, x), torch.from_numpy(out), TOLERANCE[torch.float32])


def test_changing_the_limit_while_kernels_run_keeps_results_correct():
    """One thread runs forwards (GIL released in C++) while another flips the limit between the lowest and
    the highest level: no crash and every result right. (That a forward runs at one level throughout holds
    by construction, PackedModel::forward taking its Isa as an argument; a mixed forward would be right too.)"""
    m = model()
    x = torch.randn(2, 20, 128)
    want = expected(m, x)
    session = inference.InferenceSession(m)
    levels = ("scalar", _C.best_isa())
    outputs: list[np.ndarray] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def run():
        try:
            for _ in range(30):
                outputs.append(session(x))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            done.set()

    worker = threading.Thread(target=run)
    flips = 0
    try:
        worker.start()
        while not done.is_set():
            _C.set_isa_limit(levels[flips % 2])
            flips += 1
            done.wait(0.001)
    finally:
        worker.join()
        _C.set_isa_limit("avx512_bf16")
    assert not failures, failures
    assert len(outputs) == 30 and flips > 1
    for out in outputs:
        assert_close("forward under a changing limit", want, torch.from_numpy(out), TOLERANCE[torch.float32])
