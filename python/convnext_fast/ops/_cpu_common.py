"""What the C++ (``cpu``) backends of the ops share: the extension handle, float32 views for it, and the
training switch between the custom ops and the plain torch composition."""

from __future__ import annotations

import torch

from .. import _ext
from ..backends import MISSING_EXTENSION, BackendUnavailable

# When True and autograd needs gradients of an all-float32 call, the cpu backend of every op runs the plain
# torch composition instead of its custom op. It was the default while the ops' backward ran in torch ops
# (they lost to the composition then: atto B=32 step, op 84-88 ms vs composition 72-76 ms); with the C++
# backward the ops win (benchmarks/README.md, "Training"), so it is off. Kept so the two can be compared
# (benchmarks/bench_training.py) and as an escape hatch. Read at call time: set it on this module.
TRAIN_COMPOSITION = False


def kernels():
    """The loaded ``convnext_fast._C``; :class:`BackendUnavailable` with the one missing-extension message
    when it is not (only a direct call of a cpu op gets here: the backend policy never picks it then)."""
    if _ext._C is None:
        raise BackendUnavailable(MISSING_EXTENSION.format(error=_ext.LOAD_ERROR))
    return _ext._C


def as_f32_numpy(t: torch.Tensor):
    """A contiguous float32 numpy view (a copy only when the dtype or layout needs one) for the kernels."""
    if t.dtype == torch.float32 and t.is_contiguous():  # the training step's case: 1.8 µs instead of 3.1
        return t.detach().numpy()
    return t.detach().to(torch.float32).contiguous().numpy()
