"""The training settings' fixed vocabularies, free of torch and numba so the command line can offer them
as choices without importing either (``train --help`` answers at once). The trainer validates against
these same tuples; tests/cli/test_options.py holds LABEL_KINDS equal to data.labels' and TASKS to the model's."""

from __future__ import annotations

TASKS = ("classification", "regression")
PRECISIONS = ("fp32", "bf16", "fp16")
REGRESSION_LOSSES = ("mse", "huber")
LABEL_KINDS = ("fixed", "volatility", "triple_barrier")
MODELS = ("fused", "reference")  # which implementation trains
