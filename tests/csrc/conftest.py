"""The ``isa`` fixture: runs a kernel test once per instruction-set variant this CPU can execute."""

from __future__ import annotations

import pytest

from convnext_fast._ext import _C, isa_limit

# csrc/kernels/isa.h: the fp32 kernels have scalar, avx2 and avx512 variants (avx512_bf16 only changes
# the bf16 GEMM, tested in tests/test_inference.py).
FP32_ISAS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=FP32_ISAS)
def isa(request):
    """Caps the kernels at one ISA level for the test (skipped where this CPU lacks it)."""
    if _C is None:
        pytest.skip("convnext_fast._C is not built")
    if request.param not in _C.supported_isas():
        pytest.skip(f"this CPU (or build) has no {request.param} variant")
    with isa_limit(request.param) as running:
        assert running == request.param
        yield request.param
