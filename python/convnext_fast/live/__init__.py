"""The live loop: closed candles → streaming features → window ring → model → signal → paper broker.

Run it with ``python -m convnext_fast.live`` (or ``convnext-fast live``); :class:`LiveEngine` is the
per-candle core, :func:`run_live` its async driver.
"""

from .._lazy import lazy_exports

# Loaded on first use: the loop imports torch, which `python -m convnext_fast.live --help` must not wait for.
__getattr__, __dir__ = lazy_exports(
    __name__, {name: "loop" for name in ("LiveContext", "LiveEngine", "OutputSink", "run_live")}
)

__all__ = ["LiveContext", "LiveEngine", "OutputSink", "run_live"]
