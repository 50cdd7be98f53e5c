"""How the Triton ops choose dtypes, designs, configs and grids (issue 17): autocast (CUDA's state mocked on
CPU, and CPU autocast run through the interpreter), the fused-MLP guard, bitwise-reproducible backward
reductions across tuned configs and batch sizes, and 1-D grids for batches past CUDA's 65,535 cap."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from convnext_fast.ops.bottleneck.reference import bottleneck as bottleneck_reference
from convnext_fast.ops.dwconv_layernorm.reference import dwconv_layernorm as dwconv_reference
from tests.helpers import assert_close
from tests.ops.conftest import bottleneck_inputs, drop_path_scale, dwconv_layernorm_inputs


def _fake_tensor(device: str, dtype: torch.dtype) -> SimpleNamespace:
    return SimpleNamespace(
        device=torch.device(device), dtype=dtype, is_floating_point=lambda: dtype.is_floating_point
    )


@pytest.fixture
def cuda_autocast(monkeypatch):
    """CUDA autocast on (bf16) as torch reports it, without a GPU."""
    enabled, dtype = torch.is_autocast_enabled, torch.get_autocast_dtype
    monkeypatch.setattr(
        torch, "is_autocast_enabled", lambda d=None: d == "cuda" or (d is not None and enabled(d))
    )
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda d: torch.bfloat16 if d == "cuda" else dtype(d))


def test_compute_dtype_follows_cuda_autocast(cuda_autocast):
    pytest.importorskip("triton")
    from convnext_fast.ops.triton_utils import compute_dtype

    assert compute_dtype(_fake_tensor("cuda", torch.float32)) == torch.bfloat16
    assert compute_dtype(_fake_tensor("cuda", torch.float16)) == torch.bfloat16
    assert compute_dtype(_fake_tensor("cuda", torch.int64)) == torch.int64
    assert compute_dtype(torch.zeros(1)) == torch.float32  # CPU autocast is off


def test_compute_dtype_without_autocast_is_the_input_dtype():
    pytest.importorskip("triton")
    from convnext_fast.ops.triton_utils import compute_dtype

    assert compute_dtype(_fake_tensor("cuda", torch.float32)) == torch.float32
    with torch.autocast("cpu", dtype=torch.float16):
        assert compute_dtype(torch.zeros(1)) == torch.float16


def test_wrappers_hand_the_gemms_the_autocast_dtype(triton_device, monkeypatch):
    """Stage 0 under CUDA autocast: x arrives in fp32 (LayerNorm's autocast output). The dwconv op must
    emit the autocast dtype and the bottleneck must run its GEMMs (and so the fused MLP) in it, keeping
    the fp32 residual. Autocast is mocked for the CPU device here, and the kernels are not run."""
    from convnext_fast.ops.bottleneck import triton as bn
    from convnext_fast.ops.bottleneck.triton_kernels import use_fused_mlp
    from convnext_fast.ops.dwconv_layernorm import triton as dw

    monkeypatch.setattr(torch, "is_autocast_enabled", lambda d=None: True)
    monkeypatch.setattr(torch, "get_autocast_dtype", lambda d: torch.bfloat16)
    seen = {}

    def fake_dw(x, conv_w, conv_b, norm_w, norm_b, eps):
        seen["dwconv"] = (x.dtype, conv_w.dtype, norm_w.dtype)
        return torch.empty(x.shape, dtype=norm_w.dtype), torch.empty(0), torch.empty(0)

    def fake_bn(x, n, w1, b1, w2, b2, gamma, scale, save):
        seen["bottleneck"] = (x.dtype, n.dtype, w1.dtype, w2.dtype)
        seen["fused"] = use_fused_mlp(x.shape[0] * x.shape[1], x.shape[2], n.element_size())
        return torch.empty_like(x), torch.empty(0)

    monkeypatch.setattr(dw, "dwconv_layernorm_fwd", fake_dw)
    monkeypatch.setattr(bn, "bottleneck_fwd", fake_bn)
    x, conv_w, conv_b, norm_w, norm_b = dwconv_layernorm_inputs(2, 16, 96)
    n = dw.dwconv_layernorm(x, conv_w, conv_b, norm_w, norm_b)
    assert n.dtype == torch.bfloat16
    assert seen["dwconv"] == (torch.float32, torch.float32, torch.bfloat16)
    _, _, w1, b1, w2, b2, gamma = bottleneck_inputs(2, 16, 96)
    out = bn.bottleneck(x, n, w1, b1, w2, b2, gamma)
    assert out.dtype == torch.float32
    assert seen["bottleneck"] == (torch.float32, torch.bfloat16, torch.bfloat16, torch.bfloat16)
    assert seen["fused"] is True


@pytest.mark.parametrize("with_scale", [False, True], ids=["no-drop-path", "drop-path"])
def test_autocast_numerics_in_the_interpreter(with_scale, triton_device, poison_empty, monkeypatch):
    """CPU autocast (fp16: the interpreter mishandles bf16) through both ops: fp32 residual and fp32
    leaves in, the fused MLP in fp16, gradients back in fp32, within fp16's tolerance of float64."""
    if triton_device.type != "cpu":
        pytest.skip("CUDA autocast numerics run in tests/gpu")
    from convnext_fast.ops.bottleneck import triton as bn
    from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm

    kernels = []
    real_launch = bn.launch
    monkeypatch.setattr(
        bn, "launch", lambda tuned, *a, **k: kernels.append(tuned.fn.__name__) or real_launch(tuned, *a, **k)
    )
    b, t, c = 2, 21, 24
    dw_in = [p.requires_grad_() for p in dwconv_layernorm_inputs(b, t, c)]
    x = dw_in[0]
    bn_params = [p.requires_grad_() for p in bottleneck_inputs(b, t, c)[2:]]
    scale = drop_path_scale(b) if with_scale else None
    with torch.autocast("cpu", dtype=torch.float16):
        n = dwconv_layernorm(*dw_in, 1e-6)
        out = bn.bottleneck(x, n, *bn_params, scale)
    assert n.dtype == torch.float16 and out.dtype == torch.float32
    assert kernels[0] == "fused_mlp_kernel"
    exact = [p.detach().double().requires_grad_() for p in (*dw_in, *bn_params)]
    ref_n = dwconv_reference(*exact[:5], 1e-6)
    ref = bottleneck_reference(exact[0], ref_n, *exact[5:], None if scale is None else scale.double())
    assert_close("autocast forward", ref, out, 5e-3)
    grad = torch.randn(ref.shape, dtype=torch.float64)
    leaves = [*dw_in, *bn_params]
    grads = torch.autograd.grad(out, leaves, grad.float())
    ref_grads = torch.autograd.grad(ref, exact, grad)
    for i, (g, r) in enumerate(zip(grads, ref_grads, strict=True)):
        assert g.dtype == torch.float32
        assert_close(f"autocast grad {i}", r, g, 1e-2)


def _grads(op_name: str, inputs: list[torch.Tensor], extra: tuple, grad_seed: int = 0):
    from convnext_fast.ops.bottleneck.triton import bottleneck
    from convnext_fast.ops.dwconv_layernorm.triton import dwconv_layernorm

    op = {"dwconv_layernorm": dwconv_layernorm, "bottleneck": bottleneck}[op_name]
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = op(*leaves, *extra)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed))
    return [out.detach(), *torch.autograd.grad(out, leaves, grad)]


@pytest.mark.parametrize("op_name", ["dwconv_layernorm", "bottleneck"])
def test_backward_bits_do_not_depend_on_the_tuned_config(op_name, triton_device, monkeypatch):
    """SUBTILES (what the row kernels' autotuner picks) changes the tile set per loop step, not the order
    rows are summed in: outputs and every gradient are bitwise equal. Changing the tile height itself
    (REDUCE_T, fixed by C and dtype) does change bits, so the equality is not vacuous."""
    from convnext_fast.ops import triton_utils
    from convnext_fast.ops.bottleneck import triton as bn
    from convnext_fast.ops.dwconv_layernorm import triton as dw

    shape = (2, 80, 16)  # T > CHUNK_ROWS: two partials per sample, a ragged last chunk
    if op_name == "dwconv_layernorm":
        inputs, extra = dwconv_layernorm_inputs(*shape), (1e-6,)
    else:
        inputs, extra = bottleneck_inputs(*shape), (drop_path_scale(shape[0]),)

    def run(subtiles: int) -> list[torch.Tensor]:
        config = {"SUBTILES": subtiles, "num_warps": 4}
        monkeypatch.setattr(dw, "INTERPRETER_CONFIG", config)
        monkeypatch.setattr(bn, "INTERPRETER_ROW_CONFIG", config)
        return _grads(op_name, [t.to(triton_device) for t in inputs], extra)

    one, four = run(1), run(4)
    for i, (a, b) in enumerate(zip(one, four, strict=True)):
        assert torch.equal(a, b), f"output/grad {i} differs between SUBTILES=1 and 4"
    real = triton_utils.reduce_rows
    for module in (dw, bn):
        monkeypatch.setattr(module, "reduce_rows", lambda *a: 2 * real(*a))
    taller = run(1)
    assert any(not torch.equal(a, b) for a, b in zip(one, taller, strict=True))


def test_per_sample_gradients_do_not_depend_on_the_batch(triton_device):
    """dwconv + LayerNorm: a sample's output and dx are bitwise the same alone or in a batch of three
    (chunks are per sample and fixed-size, configs do not depend on B)."""
    x, *params = dwconv_layernorm_inputs(3, 70, 16)
    batch = _grads("dwconv_layernorm", [x.to(triton_device), *(p.to(triton_device) for p in params)], (1e-6,))
    alone = _grads(
        "dwconv_layernorm", [x[:1].to(triton_device), *(p.to(triton_device) for p in params)], (1e-6,)
    )
    grad_batch = torch.randn(batch[0].shape, generator=torch.Generator().manual_seed(0))
    grad_alone = torch.randn(alone[0].shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(grad_batch[:1], grad_alone)  # same upstream gradient for sample 0
    assert torch.equal(batch[0][:1], alone[0])
    assert torch.equal(batch[1][:1], alone[1])


def test_grids_fit_cudas_limits_past_the_batch_cap(triton_device, monkeypatch):
    """B = 70,000 > 65,535 (CUDA's cap on grid axes 1 and 2): the batch goes on axis 0 (cap 2³¹ − 1) or is
    folded into the bottleneck's 1-D row-tile grids. The launches are recorded, not run."""
    from convnext_fast.ops.bottleneck import triton as bn
    from convnext_fast.ops.dwconv_layernorm import triton as dw

    grids = []

    def record(tuned, config, grid, *args, **kwargs):
        grids.append((tuned.fn.__name__, grid({**kwargs, **config, "BLOCK_M": 64, "BLOCK_N": 64})))

    monkeypatch.setattr(dw, "launch", record)
    monkeypatch.setattr(bn, "launch", record)
    b, t, c = 70_000, 2, 16
    x = torch.randn(b, t, c, device=triton_device)
    w, cb, nw, nb = (p.to(triton_device) for p in dwconv_layernorm_inputs(1, 1, c)[1:])
    dw.dwconv_layernorm_fwd(x, w, cb, nw, nb, 1e-6)
    stats = torch.zeros(b * t, device=triton_device)
    dw.dwconv_layernorm_bwd(x, x, w, cb, nw, stats, stats)
    _, _, w1, b1, w2, b2, gamma = (p.to(triton_device) for p in bottleneck_inputs(1, 1, c))
    bn.bottleneck_fwd(x, x.half(), w1.half(), b1.half(), w2.half(), b2.half(), gamma.half(), None, True)
    bn.bottleneck_bwd(x, x, w1, b1, w2, gamma, None, torch.zeros(b * t, c, device=triton_device))
    names = {name for name, _ in grids}
    assert {"dwconv_layernorm_fwd_kernel", "branch_grad_kernel", "fused_mlp_kernel"} <= names
    for name, grid in grids:
        assert grid[0] < 2**31 - 1 and all(g <= 65_535 for g in grid[1:]), (name, grid)
    assert dict(grids)["dwconv_layernorm_fwd_kernel"][0] == b


def test_sequences_longer_than_grid_axis_one_allows_are_refused(triton_device):
    from convnext_fast.ops.dwconv_layernorm.triton import MAX_T, dwconv_layernorm

    _, w, cb, nw, nb = (p.to(triton_device) for p in dwconv_layernorm_inputs(1, 1, 4))
    with pytest.raises(ValueError, match="at most"):
        dwconv_layernorm(torch.randn(1, MAX_T + 1, 4, device=triton_device), w, cb, nw, nb)


def test_deterministic_mode_picks_the_first_config_the_pruner_keeps(triton_device):
    """Under torch.use_deterministic_algorithms(True) a GPU launch uses rule_config: no timing, so every
    process picks the same config for the same sizes and dtypes."""
    from convnext_fast.ops.bottleneck.triton_kernels import bwd_hidden_kernel, gemm_bias_gelu_kernel
    from convnext_fast.ops.triton_utils import rule_config

    half, single = torch.empty(1, dtype=torch.float16), torch.empty(1, dtype=torch.float32)
    small = rule_config(
        gemm_bias_gelu_kernel, (half, half, half, half, 20, 384, 96, 32), {"PRECISION": "tf32"}
    )
    assert (small.kwargs["BLOCK_M"], small.kwargs["BLOCK_N"]) == (32, 64)
    big = rule_config(gemm_bias_gelu_kernel, (half, half, half, half, 1 << 15, 384, 96, 1 << 15), {})
    assert (big.kwargs["BLOCK_M"], big.kwargs["BLOCK_N"], big.num_warps) == (128, 128, 8)
    fp32 = rule_config(bwd_hidden_kernel, (single,) * 7 + (1 << 15, 384, 96, 1 << 15), {})
    assert fp32.kwargs["BLOCK_M"] * fp32.kwargs["BLOCK_N"] <= 2048 and fp32.kwargs["BLOCK_K"] <= 32


def test_autotune_keys_are_bucketed(triton_device):
    """No autotuner keys on an exact row or time-step count (a re-tune for every new batch size): only on
    layer widths and power-of-two buckets, which convnext_fast.ops.triton_utils.bucket computes."""
    import triton

    from convnext_fast.ops.bottleneck import triton_kernels as bn
    from convnext_fast.ops.dwconv_layernorm import triton_kernels as dw
    from convnext_fast.ops.triton_utils import bucket

    tuners = [
        v for m in (bn, dw) for v in vars(m).values() if isinstance(v, triton.runtime.autotuner.Autotuner)
    ]
    assert len(tuners) == 8
    for tuner in tuners:
        assert set(tuner.keys) <= {"M_BUCKET", "T_BUCKET", "N", "K", "C"}, tuner.keys
    assert [bucket(n) for n in (1, 2, 3, 64, 65, 1000)] == [1, 2, 4, 64, 128, 1024]
