"""One comparison helper for every fused-vs-reference check (after flash-linear-attention's ``assert_close``)."""

from __future__ import annotations

import torch

# Relative error ‖out − ref‖ / ‖ref‖ against a float64 reference (design.md conventions).
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def relative_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref64, out64 = ref.detach().double().cpu(), out.detach().double().cpu()
    denom = ref64.norm().item()
    return (out64 - ref64).norm().item() / (denom if denom > 0 else 1.0)


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, ratio: float) -> None:
    """Fail unless ``out`` matches ``ref`` in shape, is free of NaN/Inf, and ‖out−ref‖/‖ref‖ ≤ ratio.
    The message reports the relative and max-abs errors."""
    assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert torch.isfinite(out).all(), f"{name}: output has NaN/Inf (unwritten or broken elements)"
    err = relative_error(ref, out)
    max_abs = (out.detach().double().cpu() - ref.detach().double().cpu()).abs().max().item()
    assert err <= ratio, f"{name}: relative error {err:.3e} > {ratio:.1e} (max abs diff {max_abs:.3e})"
