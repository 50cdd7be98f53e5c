"""What the end-to-end tests share: a tiny model/run and a candle CSV in the real data file's layout."""

from __future__ import annotations

import pandas as pd

# A model of a few thousand parameters on 64-bar windows: seconds per run on one CPU thread.
TINY = {"dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1), "window": 64, "stride": 3, "batch_size": 16}
TINY_ARGS = "--dims 8,16,32,64 --depths 1,1,1,1 --window 64 --stride 3 --batch-size 16".split()


def write_candles_csv(candles, path) -> None:
    stamps = pd.to_datetime(candles.start_ms, unit="ms").strftime("%Y-%m-%d %H:%M:%S")
    columns = {"Open": candles.open, "High": candles.high, "Low": candles.low, "Close": candles.close}
    pd.DataFrame({"timestamp": stamps, **columns, "Volume": candles.volume}).to_csv(path, index=False)
