"""Tests for market data: candles, the Bybit client (against tests/data/fake_bybit.py) and the store."""
