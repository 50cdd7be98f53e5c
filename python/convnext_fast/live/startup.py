"""What every live run (one symbol or a universe) does before its first candle: logging, the model and its
checkpoint metadata, and the fingerprints that identify the run in its state file."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np

from ..data.candles import Candles, format_ms

SYNTHETIC_BANNER = "SYNTHETIC market (no network and no --data): generated candles, not a real market"


def load_model(args):
    """``(model, meta, label, identity)`` of a live run: the ``--checkpoint``'s model and metadata, else a
    seeded UNTRAINED ``--variant`` (plumbing and latency only) with metadata saying it takes raw features."""
    from .predictor import set_threads

    set_threads(args.threads)
    if args.checkpoint:
        from ..train import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint, fused=False)
        digest = hashlib.sha256(Path(args.checkpoint).read_bytes()).hexdigest()[:16]
        return model, meta, f"checkpoint {args.checkpoint}", f"checkpoint sha256:{digest}"
    import torch

    from .. import reference
    from ..features.pipeline import FeatureSpec

    spec = FeatureSpec()
    # Seeded (--seed), so an untrained run can be resumed and replayed against itself.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = reference.create(args.variant, in_chans=spec.n_channels).eval()
    from ..train.checkpoint import CheckpointMeta

    meta = CheckpointMeta.untrained(model.config, spec, args.window)
    weights = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        weights.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    return (
        model,
        meta,
        f"UNTRAINED {args.variant} (random weights: plumbing and latency only)",
        f"untrained {args.variant} sha256:{weights.hexdigest()[:16]}",
    )


def series_digest(candles: Candles, n: int = 1000) -> str:
    """A fingerprint of a series: its first ``n`` candles (a store that grows keeps it)."""
    head = candles[:n]
    h = hashlib.sha256()
    for arr in (head.start_ms, head.open, head.high, head.low, head.close, head.volume):
        h.update(np.ascontiguousarray(arr).tobytes())
    return f"{len(head)} bars from {format_ms(int(head.start_ms[0]))} sha256:{h.hexdigest()[:16]}"


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):
        return (
            time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"
        )


def setup_logging(verbose: bool) -> None:
    """UTC-stamped log lines of the ``convnext_fast`` loggers on stderr (INFO with ``--verbose``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(_UTCFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("convnext_fast")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False
