"""StreamingFeatures state save/restore: a restored instance continues bit for bit (what a live --resume
relies on), and a snapshot of another spec is refused."""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.features.pipeline import FeatureSpec, StreamingFeatures


def test_restored_state_continues_bit_for_bit(rng):
    c = synthetic_candles(600, seed=int(rng.integers(1 << 30)))
    cut = int(rng.integers(1, 599))
    whole = StreamingFeatures()
    expected = whole.extend(c.open, c.high, c.low, c.close, c.volume)
    first = StreamingFeatures()
    first.extend(*(a[:cut] for a in (c.open, c.high, c.low, c.close, c.volume)))
    saved = first.get_state()
    second = StreamingFeatures()
    second.set_state(saved)
    assert second.n_bars == cut
    rest = np.stack(
        [
            second.update(*bar)
            for bar in zip(
                c.open[cut:], c.high[cut:], c.low[cut:], c.close[cut:], c.volume[cut:], strict=True
            )
        ],
        axis=1,
    )
    np.testing.assert_array_equal(rest, expected[:, cut:])

    other = StreamingFeatures(FeatureSpec(ema_periods=(9, 21)))
    with pytest.raises(ValueError, match="another feature spec"):
        other.set_state(saved)
