"""The live loop: closed candles → streaming features → window ring → model → signal → paper broker.

Run it with ``python -m convnext_fast.live`` (or ``convnext-fast live``); :class:`LiveEngine` is the
per-candle core, :func:`run_live` its async driver.
"""

from .loop import LiveContext, LiveEngine, OutputSink, run_live

__all__ = ["LiveContext", "LiveEngine", "OutputSink", "run_live"]
