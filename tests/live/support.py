"""Shared pieces for the live tests: a small model, the real feature pipeline and an engine factory."""

from __future__ import annotations

import time

import numpy as np
import torch

from convnext_fast import reference
from convnext_fast.data.candles import Candles
from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.features.pipeline import FeatureSpec, StreamingFeatures, compute_features
from convnext_fast.live.loop import LiveEngine
from convnext_fast.live.predictor import make_predictor, set_threads
from convnext_fast.live.session import DecisionRule
from convnext_fast.trading.backtest import BacktestConfig
from convnext_fast.trading.broker import PaperBroker
from convnext_fast.trading.decision import DecisionPolicy
from convnext_fast.train.normalisation import Normalisation

WINDOW = 64
HOUR_MS = 3_600_000


SPEC = FeatureSpec()
N_CHANNELS = SPEC.n_channels
HISTORY = SPEC.warmup + WINDOW  # closed candles before the first signal


def batch_features(candles: Candles) -> np.ndarray:
    return compute_features(candles.open, candles.high, candles.low, candles.close, candles.volume, spec=SPEC)


def use_credentials(monkeypatch, tmp_path, creds) -> None:
    """Run in ``tmp_path`` with ``creds`` as the API key and secret in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BYBIT_API_KEY", creds.api_key)
    monkeypatch.setenv("BYBIT_API_SECRET", creds.api_secret)


def candles_until_now(rng: np.random.Generator, n: int, m: int) -> Candles:
    """``n + m`` synthetic hourly candles, the first ``n`` closed by now (the history), ``m`` still to come."""
    start = (int(time.time() * 1000) // HOUR_MS - n) * HOUR_MS
    return synthetic_candles(n + m, seed=int(rng.integers(1000)), start_ms=start)


def batch_probs(model, norm, candles: Candles) -> np.ndarray:
    """The batch path: features of the whole series → normalise → windows → one batched forward."""
    feats = batch_features(candles)
    mean = np.asarray(norm["mean"], dtype=np.float32)[:, None]
    std = np.asarray(norm["std"], dtype=np.float32)[:, None]
    feats = np.clip((feats - mean) / std, -norm["clip"], norm["clip"]).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(feats, WINDOW, axis=1).transpose(1, 0, 2)
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(windows))).double()
    probs = torch.softmax(logits, dim=1).numpy()
    return np.vstack([np.full((WINDOW - 1, 3), np.nan), probs])  # row t: window ending at bar t


def model_and_norm(rng: np.random.Generator, n_channels: int = N_CHANNELS):
    """A tiny ConvNeXt (fast on a loaded 2-core box) with non-trivial layer scales, so inputs matter, and a
    plausible normalisation."""
    model = reference.ConvNeXt1d(
        in_chans=n_channels, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), layer_scale_init=0.5
    ).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(4.0)  # spread the logits so both thresholds and ties are exercised
    norm = {
        "mean": rng.normal(0, 0.01, n_channels).tolist(),
        "std": rng.uniform(0.01, 0.5, n_channels).tolist(),
        "clip": 10.0,
    }
    return model, norm


def make_engine(model, norm, *, features=None, threshold=0.4, broker=None, backend="reference") -> LiveEngine:
    features = features or StreamingFeatures(SPEC)
    # One bar at a time: intra-op threads only fight the other processes on this shared 2-core box
    # (measured 2 ms vs 60 ms per forward of this model under load). conftest resets it per test.
    set_threads(1)
    predict, _ = make_predictor(model, backend)
    rule = DecisionRule(threshold=threshold, size=0.5)
    return LiveEngine(
        features=features,
        predict=predict,
        broker=broker or PaperBroker(BacktestConfig(taker_fee_bps=5.5, slippage_bps=1.0)),
        window=WINDOW,
        n_channels=N_CHANNELS,
        policy=DecisionPolicy("classification", 3, rule.threshold),
        size_fn=rule.size_for,
        normalize=None if norm is None else Normalisation.from_dict(norm).per_bar(),
        warmup_bars=SPEC.warmup,
    )


def market(n: int, rng: np.random.Generator) -> Candles:
    return synthetic_candles(n, seed=int(rng.integers(2**31)), interval_ms=HOUR_MS)


def seeded(rng: np.random.Generator, n_stream: int, **engine_kwargs):
    """``(candles, engine, stream)``: an engine warmed up on the first ``HISTORY`` candles of a fresh market
    and the ``n_stream`` candles after them."""
    candles = market(HISTORY + n_stream, rng)
    engine = make_engine(*model_and_norm(rng), **engine_kwargs)
    engine.warm_up(candles[:HISTORY])
    return candles, engine, candles[HISTORY:]


def write_checkpoint(path, rng: np.random.Generator, fit_on: Candles):
    """A deployable checkpoint of :func:`model_and_norm`'s model, as the trainer writes it, with the
    trainer's normalisation fitted on ``fit_on`` so its inputs are unit-scaled."""
    from convnext_fast.train import save_checkpoint
    from convnext_fast.train.prepare import normalisation

    model, _ = model_and_norm(rng)
    norm = normalisation(batch_features(fit_on), np.arange(HISTORY, len(fit_on)), WINDOW)
    return save_checkpoint(
        path, model, {"feature_spec": SPEC.to_dict(), "normalisation": norm, "window": WINDOW}
    )


def write_csv(path, candles: Candles):
    """``candles`` as a CSV file the CLI reads (epoch-ms timestamps, full float precision)."""
    rows = ["timestamp,Open,High,Low,Close,Volume"] + [
        f"{t},{o!r},{h!r},{lo!r},{c!r},{v!r}"
        for t, o, h, lo, c, v in zip(
            candles.start_ms.tolist(),
            candles.open.tolist(),
            candles.high.tolist(),
            candles.low.tolist(),
            candles.close.tolist(),
            candles.volume.tolist(),
            strict=True,
        )
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_checkpoint(path, rng: np.random.Generator, fit_on: Candles, *, task="classification", horizons=1):
    """A deployable checkpoint of a tiny random model for ``task`` (regression: one output per horizon,
    with the trainer's ``target_scale``), normalisation fitted on ``fit_on`` as the trainer does."""
    from convnext_fast.train import save_checkpoint
    from convnext_fast.train.prepare import normalisation

    kwargs = {"task": task, "num_outputs": horizons} if task == "regression" else {}
    model = reference.ConvNeXt1d(
        in_chans=N_CHANNELS, dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), layer_scale_init=0.5, **kwargs
    ).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(4.0)
    norm = normalisation(batch_features(fit_on), np.arange(HISTORY, len(fit_on)), WINDOW)
    meta = {"feature_spec": SPEC.to_dict(), "normalisation": norm, "window": WINDOW, "task": task}
    if task == "regression":
        meta["target_scale"] = rng.uniform(0.002, 0.02, horizons).tolist()
    return save_checkpoint(path, model, meta)


class FundingHistory:
    """The exchange's funding history as a live ``FundingSchedule`` refresh sees it: ``table`` maps settlement
    times to rates, each listed ``listed_after_ms`` after it settles, by the clock ``now`` (ms, set by the
    test or by ``charge``). Every request's ``(start, end)`` lands in ``asked``; the request numbers in
    ``fail_on`` (1-based) raise as an unreachable exchange does."""

    def __init__(self, table: dict[int, float], *, listed_after_ms: int = 0, now: int = 0, fail_on=()):
        self.table, self.listed_after_ms, self.now, self.fail_on = table, listed_after_ms, now, set(fail_on)
        self.asked: list[tuple[int, int]] = []

    @classmethod
    def eight_hourly(cls, rng: np.random.Generator, n: int, **kw) -> tuple[int, FundingHistory]:
        """``(t0, history)``: n settlements 8 h apart after t0 (itself on the 8-hour grid), rates ~1e-4."""
        step = 8 * HOUR_MS
        t0 = 1_700_000_000_000 // step * step
        times = (t0 + np.arange(1, n + 1) * step).tolist()
        return t0, cls(dict(zip(times, rng.normal(1e-4, 1e-4, n).tolist(), strict=True)), **kw)

    def clock_ms(self) -> int:
        return self.now

    def __call__(self, start: int, end: int):
        from convnext_fast.data.funding import FundingRates
        from convnext_fast.errors import UserError

        self.asked.append((start, end))
        if len(self.asked) in self.fail_on:
            raise UserError("Bybit unreachable")
        listed = min(end, self.now - self.listed_after_ms)
        times = [t for t in self.table if start <= t <= listed]
        return FundingRates(np.array(times, np.int64), np.array([self.table[t] for t in times]))

    def charge(self, schedule, bars, *, seen_after_ms: int) -> list[float]:
        """Each bar's funding, the loop seeing each bar ``seen_after_ms`` after it closes."""
        out = []
        for bar in bars:
            self.now = int(bar) + schedule.interval_ms + seen_after_ms
            out.append(schedule.rate_for_bar(int(bar)))
        return out
