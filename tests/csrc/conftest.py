"""The ``isa`` fixture: runs a kernel test once per instruction-set variant this CPU can execute."""

from __future__ import annotations

import pytest

from convnext_fast._ext import _C, isa_limit

# csrc/kernels/isa.h: the fp32 kernels have scalar, avx2 and avx512 variants; avx512_bf16 only changes
# the bf16 GEMM (the ``bf16_isa`` fixture).
FP32_ISAS = ("scalar", "avx2", "avx512")
# The bf16 GEMM's levels: the portable loop, AVX2+FMA widening (which avx512 runs too), vdpbf16ps.
BF16_ISAS = ("scalar", "avx2", "avx512_bf16")


def _capped(level: str):
    if _C is None:
        pytest.skip("convnext_fast._C is not built")
    if level not in _C.supported_isas():
        pytest.skip(f"this CPU (or build) has no {level} variant")
    return isa_limit(level)


@pytest.fixture(params=FP32_ISAS)
def isa(request):
    """Caps the kernels at one ISA level for the test (skipped where this CPU lacks it)."""
    with _capped(request.param) as running:
        assert running == request.param
        yield request.param


@pytest.fixture(params=BF16_ISAS)
def bf16_isa(request):
    """The same for each variant of the bf16 GEMM."""
    with _capped(request.param) as running:
        assert running == request.param
        yield request.param
