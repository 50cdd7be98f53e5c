"""InferenceSession: one C++ call per forward, equal to the float64 reference within 1e-5, noticing weight
changes after packing, clear input errors, NaN propagation and the eager fallback without _C."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import convnext_fast
from convnext_fast import inference, reference
from convnext_fast._ext import _C, isa_limit
from tests.helpers import TOLERANCE, assert_close
from tests.test_model import SMALL, randomize_

pytestmark = pytest.mark.skipif(_C is None, reason="convnext_fast._C is not built")


def model(**kw) -> reference.ConvNeXt1d:
    return randomize_(reference.ConvNeXt1d(in_chans=20, **{**SMALL, **kw})).eval()


def expected(m: reference.ConvNeXt1d, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(m).double()(x.double())


@pytest.mark.parametrize(("batch", "t"), [(1, 64), (3, 75), (2, 256)], ids=["B1-T64", "B3-T75", "B2-T256"])
def test_matches_reference(batch, t):
    m = model()
    session = inference.InferenceSession(m)
    assert session.uses_cpp
    x = torch.randn(batch, 20, t)
    assert_close("session(tensor)", expected(m, x), torch.from_numpy(session(x)), TOLERANCE[torch.float32])
    assert_close(
        "session(numpy)", expected(m, x), torch.from_numpy(session(x.numpy())), TOLERANCE[torch.float32]
    )


@pytest.mark.slow
def test_atto_variant_regression_and_non_contiguous_float64_input():
    m = randomize_(reference.create("atto", task="regression", num_outputs=4)).eval()
    session = inference.InferenceSession(m)
    x = torch.randn(2, 70, 20).transpose(1, 2)  # non-contiguous [B, C_in, T] view
    out = session(x.double().numpy())
    assert out.shape == (2, 4) and out.dtype == np.float32
    assert_close("atto regression", expected(m, x), torch.from_numpy(out), TOLERANCE[torch.float32])


def test_notices_in_place_updates_and_load_state_dict():
    m = model()
    session = convnext_fast.convert(m).inference_session()
    x = torch.randn(2, 20, 64)
    first = session(x)
    with torch.no_grad():
        session.model.stages[2].blocks[0].mlp.fc2.weight.mul_(-2.0)
    changed = session(x)
    assert not np.allclose(first, changed)
    assert_close(
        "after in-place update",
        expected(session.model, x),
        torch.from_numpy(changed),
        TOLERANCE[torch.float32],
    )
    session.model.load_state_dict(model().state_dict())
    assert_close(
        "after load_state_dict",
        expected(session.model, x),
        torch.from_numpy(session(x)),
        TOLERANCE[torch.float32],
    )


@pytest.mark.slow
def test_notices_replaced_parameters_and_dtype_moves():
    m = model()
    session = inference.InferenceSession(m)
    x = torch.randn(2, 20, 64)
    first = session(x)
    block = m.stages[1].blocks[0]
    block.gamma = torch.nn.Parameter(block.gamma.detach() * -3.0)  # a new Parameter object, version 0
    assert_close(
        "after replacing gamma", expected(m, x), torch.from_numpy(session(x)), TOLERANCE[torch.float32]
    )
    m.load_state_dict(model().state_dict(), assign=True)  # every parameter replaced
    assert_close("after assign=True", expected(m, x), torch.from_numpy(session(x)), TOLERANCE[torch.float32])
    m.double()  # new storage for every parameter
    assert_close("after .double()", expected(m, x), torch.from_numpy(session(x)), TOLERANCE[torch.float32])
    assert not np.allclose(first, session(x))


def test_refresh_picks_up_writes_through_data():
    # .data writes skip the version counter, so the tracking session cannot see them: refresh() must.
    m = model()
    session = inference.InferenceSession(m)
    x = torch.randn(2, 20, 64)
    first = session(x)
    m.stages[3].blocks[0].mlp.fc1.weight.data.mul_(-2.0)
    assert np.array_equal(session(x), first)  # the documented blind spot: still the packed weights
    session.refresh()
    after = session(x)
    assert not np.allclose(first, after)
    assert_close("after refresh()", expected(m, x), torch.from_numpy(after), TOLERANCE[torch.float32])


def test_snapshot_session_ignores_changes_until_refresh():
    m = model()
    session = convnext_fast.convert(m).inference_session(track_weights=False)
    x = torch.randn(3, 20, 96)
    before = expected(session.model, x)
    with torch.no_grad():
        for p in session.model.parameters():
            p.mul_(1.5)
    assert_close("snapshot", before, torch.from_numpy(session(x)), TOLERANCE[torch.float32])
    session.refresh()
    assert_close(
        "after refresh()", expected(session.model, x), torch.from_numpy(session(x)), TOLERANCE[torch.float32]
    )


def test_track_weights_must_be_a_bool():
    with pytest.raises(TypeError, match="track_weights must be True or False"):
        inference.InferenceSession(model(), track_weights="no")


@pytest.mark.slow
def test_train_mode_model_gives_eval_outputs():
    m = model(drop_path_rate=0.5).train()
    session = inference.InferenceSession(m)
    x = torch.randn(4, 20, 64)
    assert_close(
        "train-mode model", expected(m.eval(), x), torch.from_numpy(session(x)), TOLERANCE[torch.float32]
    )


def test_nan_input_propagates():
    session = inference.InferenceSession(model())
    x = np.random.default_rng(0).standard_normal((2, 20, 64)).astype(np.float32)
    x[0, 5, 50] = np.nan
    out = session(x)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        ([[1.0]], TypeError, "x must be a numpy array or torch.Tensor"),
        (np.zeros((20, 64), np.float32), ValueError, r"x must have shape \[B, C_in=20, T\]"),
        (np.zeros((1, 19, 64), np.float32), ValueError, "in_chans=20"),
        (np.zeros((1, 20, 31), np.float32), ValueError, "at least 32"),
        (np.zeros((1, 20, 64), np.int64), TypeError, "floating-point"),
        (np.zeros((0, 20, 64), np.float32), ValueError, "batch size 0"),
    ],
    ids=["list", "rank", "channels", "short-T", "dtype", "empty"],
)
def test_bad_inputs_name_the_argument(x, error, match):
    session = inference.InferenceSession(model())
    with pytest.raises(error, match=match):
        session(x)


def test_rejects_non_model():
    with pytest.raises(TypeError, match="model must be a convnext_fast ConvNeXt1d"):
        inference.InferenceSession(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_falls_back_to_eager_without_the_extension(monkeypatch):
    monkeypatch.setattr(inference, "_C", None)
    m = model().train()
    session = inference.InferenceSession(m)
    assert not session.uses_cpp
    x = torch.randn(2, 20, 64)
    out = session(x)
    assert m.training  # the fallback runs in eval mode and restores the caller's mode
    assert_close("eager fallback", expected(m.eval(), x), torch.from_numpy(out), TOLERANCE[torch.float32])


# bf16 weights (opt-in): activations rounded to bf16 at every block GEMM, fp32 accumulation. Stated
# tolerance: 2e-2 relative on the logits (bf16 has 8 significant bits; measured ~2-6e-3 here).
BF16_TOLERANCE = 2e-2


# The bf16 GEMM's variants (csrc/kernels/isa.h): vdpbf16ps at avx512_bf16, FMAs over weights widened to fp32
# at avx2 (and avx512), else the portable loop; the rest of the model runs at the same level.
BF16_PATHS = {"bf16-dot": "avx512_bf16", "widen-avx2": "avx2", "loop-scalar": "scalar"}


@pytest.fixture(params=list(BF16_PATHS))
def bf16_path(request):
    """Each bf16 kernel this CPU can run (vdpbf16ps is skipped where the CPU lacks AVX512_BF16)."""
    level = BF16_PATHS[request.param]
    if level not in _C.supported_isas():
        pytest.skip(f"this CPU has no {level}")
    with isa_limit(level) as running:
        assert running == level
        yield request.param


@pytest.mark.parametrize(("batch", "t"), [(1, 64), (3, 75), (2, 160)], ids=["B1-T64", "B3-T75", "B2-T160"])
def test_bf16_session_close_to_reference(batch, t, bf16_path):
    m = model(dims=(20, 40, 100, 104))  # C = 20, 40, 100 and a 104 whose 4C is not a multiple of 32
    session = inference.InferenceSession(m, precision="bf16")
    # The error is measured over at least 8 windows (B=1: eight B=1 calls). Over one window's 3 logits it is
    # too noisy to test: ‖ref‖ of 3 random logits can be small, and 150 seeds gave a p99 of 3.1e-2 at B=1
    # against 7e-3 at B=3.
    xs = [torch.randn(batch, 20, t) for _ in range(-(-8 // batch))]
    outs = [session(x) for x in xs]
    assert all(out.dtype == np.float32 for out in outs)
    want = torch.cat([expected(m, x) for x in xs])
    assert_close("bf16 session", want, torch.from_numpy(np.concatenate(outs)), BF16_TOLERANCE)
    x, out = xs[0], outs[0]
    fp32 = inference.InferenceSession(m)(x)
    assert not np.array_equal(out, fp32), "bf16 session gave bit-identical fp32 results: bf16 weights unused?"


def test_bf16_paths_agree_and_fp32_default_unchanged():
    if "avx512_bf16" not in _C.supported_isas():
        pytest.skip("this CPU has no AVX512_BF16")
    m = model()
    x = np.random.default_rng(3).standard_normal((4, 20, 128)).astype(np.float32)
    outs = []
    # vdpbf16ps, then the AVX2 widening kernel one level below (the fp32 layers stay on the same AVX-512 kernels)
    for level in ("avx512_bf16", "avx512"):
        with isa_limit(level):
            outs.append(inference.InferenceSession(m, precision="bf16")(x))
    # Same bf16 products, another summation order: one GEMM agrees to ~4e-7 (checked tightly below), but each
    # layer rounds its input activations to bf16 again, so a last-bit difference can flip one bf16 rounding
    # (2**-8 relative) and a whole output moves by up to a few 1e-4 (seen: 3.2e-4 on one sample). The bound is
    # far below bf16's own error against fp32 (BF16_TOLERANCE) and far above summation noise.
    rel = np.linalg.norm(outs[0] - outs[1]) / np.linalg.norm(outs[1])
    assert rel <= 2e-3, f"the two bf16 paths differ by {rel:.2e} (relative)"
    rng = np.random.default_rng()
    a = rng.standard_normal((37, 384)).astype(np.float32)
    w = (rng.standard_normal((96, 384)) / 384**0.5).astype(np.float32)
    lin = _C.PackedLinear(w, rng.standard_normal(96).astype(np.float32), True)
    gemm = []
    for level in ("avx512_bf16", "avx512"):
        with isa_limit(level):
            out = np.full((37, 96), np.nan, np.float32)
            lin.forward(a, out)
            gemm.append(out)
    assert np.linalg.norm(gemm[0] - gemm[1]) / np.linalg.norm(gemm[1]) <= 1e-5
    assert inference.InferenceSession(m).precision == "fp32"


def test_bf16_packed_linear_from_numpy_nan_poisoned(bf16_path):
    rng = np.random.default_rng(5)
    for m, k, n in [(1, 41, 37), (13, 100, 400), (8, 768, 96)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        w = (rng.standard_normal((n, k)) / k**0.5).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        out = np.full((m, n), np.nan, dtype=np.float32)
        _C.PackedLinear(w, b, bf16=True).forward(a, out)
        ref = a.astype(np.float64) @ w.T.astype(np.float64) + b
        assert np.isfinite(out).all()
        assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 5e-3


def test_bad_precision_is_a_user_error():
    from convnext_fast.errors import UserError

    with pytest.raises(UserError, match="precision must be one of"):
        inference.InferenceSession(model(), precision="int4")


@pytest.mark.slow  # the feature pipeline's numba compile dominates (~10 s of CPU)
def test_bf16_on_real_windows_agrees_with_fp32():
    from benchmarks.bench_precision import DATA, bf16_agreement, real_windows

    if not DATA.is_file():
        pytest.skip(f"{DATA} not present")
    wins = real_windows(DATA, 64, bars=1200)
    stats = bf16_agreement(model(), wins)
    assert stats["argmax_agreement"] >= 0.95 and stats["max_abs_dprob"] <= 5e-3, stats


def test_adaptive_threads_same_outputs_and_restores_the_thread_count():
    m = model()
    x = np.random.default_rng(4).standard_normal((2, 20, 96)).astype(np.float32)
    plain = inference.InferenceSession(m, track_weights=False)
    before = _C.get_num_threads()
    _C.set_num_threads(2)
    try:
        adaptive = inference.InferenceSession(m, track_weights=False, adaptive_threads=True)
        outs = [adaptive(x) for _ in range(40)]  # both team sizes run (first calls, then probes)
        assert _C.get_num_threads() == 2
        assert set(adaptive._team.times) == {1, 2} and all(adaptive._team.median(n) > 0 for n in (1, 2))
    finally:
        _C.set_num_threads(before)
    ref = plain(x)
    for out in outs:
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="adaptive_threads"):
        inference.InferenceSession(m, adaptive_threads="yes")


def test_adaptive_team_follows_the_median_not_a_tail(rng):
    """Under load the team's calls are mostly fast with a few descheduled ones far slower: the team must
    keep running (its median is lower), and one thread must take over once the team's median is higher."""
    team = inference._AdaptiveTeam(full=2)
    fast, single = rng.uniform(0.9, 1.1), rng.uniform(1.6, 2.0)
    chosen = []
    for call in range(200):
        nt = team.choose()
        chosen.append(nt)
        if nt == 2:
            tail = call % 4 == 0  # a quarter of the team's calls wait 40x for a parked thread
            team.record(2, fast * (40.0 if tail else rng.uniform(0.95, 1.05)))
        else:
            team.record(1, single * rng.uniform(0.95, 1.05))
    steady = chosen[50:]
    assert steady.count(2) > 0.9 * len(steady), "the team's median is lower: it should run"
    assert 1 in steady, "one thread is still probed now and then"
    for _ in range(3 * team.WINDOW):  # now the team is slow on most calls
        team.record(2, fast * 40.0)
    picks = [team.choose() for _ in range(team.PROBE)]
    assert picks.count(1) == team.PROBE - 1, picks  # every call but the probe of the team
