"""bf16 session against fp32 on real windows of the shipped data (accuracy), and tiny / atto B=1 latency
of the fp32 and bf16 sessions beside ONNX Runtime fp32.

    python -m benchmarks.bench_precision [variant] [n_windows]      # accuracy table
    pytest benchmarks/bench_precision.py --benchmark-only --benchmark-json=bf16.json
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.conftest import C_IN, T, forward_fn, reference_model

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bybit_btcusdt_60.csv"


def real_windows(path: Path, n_windows: int, t: int = T, bars: int | None = None) -> np.ndarray:
    """``[n, 20, t]`` float32 windows from the last ``bars`` candles of ``path`` (default: just enough):
    the default feature spec, NaN warm-up dropped, z-scored per channel over the span (the trainer
    normalises per fold the same way), windows evenly spaced over the span."""
    from convnext_fast.data.candles import Candles
    from convnext_fast.train.inputs import FeatureSpec, feature_matrix

    warmup = 400
    bars = bars or warmup + t + 4 * n_windows
    # parse only the header and the last `bars` rows (the whole 45k-row file takes seconds)
    lines = path.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        tail = Path(tmp) / path.name
        tail.write_text("\n".join([lines[0], *lines[max(1, len(lines) - bars) :]]) + "\n")
        candles = Candles.from_csv(tail)
    feats = feature_matrix(candles, FeatureSpec())
    feats = feats[:, ~np.isnan(feats).any(0)]
    feats = (feats - feats.mean(1, keepdims=True)) / (feats.std(1, keepdims=True) + 1e-12)
    starts = np.linspace(0, feats.shape[1] - t, n_windows).astype(int)
    return np.ascontiguousarray(np.stack([feats[:, s : s + t] for s in starts]), dtype=np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def bf16_agreement(model, windows: np.ndarray, batch: int = 64) -> dict[str, float]:
    """argmax agreement and max |Δprob| of the bf16 session against the fp32 one on ``windows``."""
    from convnext_fast.inference import InferenceSession

    fp32 = InferenceSession(model, track_weights=False)
    bf16 = InferenceSession(model, track_weights=False, precision="bf16")
    a = np.concatenate([fp32(windows[i : i + batch]) for i in range(0, len(windows), batch)])
    b = np.concatenate([bf16(windows[i : i + batch]) for i in range(0, len(windows), batch)])
    pa, pb = softmax(a.astype(np.float64)), softmax(b.astype(np.float64))
    return {
        "windows": len(windows),
        "argmax_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
        "max_abs_dprob": float(np.abs(pa - pb).max()),
        "max_rel_logit_err": float(np.abs(a - b).max() / np.abs(a).max()),
    }


BF16_IMPLS = ("onnxruntime", "session-snapshot", "session-bf16")


@pytest.mark.parametrize("impl", BF16_IMPLS)
@pytest.mark.parametrize("variant", ["atto", "tiny"])
def test_bf16_latency(benchmark, group, variant, impl):
    benchmark.group = group(f"precision {variant} B=1")
    if impl == "session-bf16":
        from convnext_fast.inference import InferenceSession

        session = InferenceSession(reference_model(variant), track_weights=False, precision="bf16")
        x = np.random.default_rng(1).standard_normal((1, C_IN, T)).astype(np.float32)

        def run():
            return session(x)
    else:
        run = forward_fn(impl, variant, 1)
    run()
    benchmark.pedantic(run, rounds=100, iterations=1, warmup_rounds=2)


if __name__ == "__main__":
    torch.set_num_threads(2)
    variant = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    if not DATA.is_file():
        sys.exit(f"{DATA} not found")
    wins = real_windows(DATA, n)
    print(variant, bf16_agreement(reference_model(variant), wins))
