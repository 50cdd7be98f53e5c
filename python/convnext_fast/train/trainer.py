"""Walk-forward training: for each fold train → (purge) → validate → (purge) → test, early-stopped on the
validation loss, scored on the test bars next to naive baselines, then pooled over folds.

Run directory layout (``config.out``)::

    config.json            the TrainConfig (a resumed run must match it)
    metrics.jsonl          one JSON line per epoch and fold
    results.json           per-fold and pooled test metrics with baselines, throughput, wall time
    fold_K/best.safetensors   best-validation weights + meta (the checkpoint to deploy)
    fold_K/last.safetensors   latest epoch with optimiser/EMA state (what --resume continues from)
    fold_K/predictions.npz    test outputs, targets, bar indices (pooled metrics are rebuilt from these)
    fold_K/result.json        the fold's scores (a finished fold is skipped on resume)

``fold=K`` (``train --fold K``) trains only fold K, so folds can be farmed out to processes or machines
that share ``out``: it writes the same ``fold_K/`` files as a full run (its epoch log goes to
``fold_K/metrics.jsonl``), and whichever fold finishes last also writes the pooled ``results.json``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from ..errors import UserError
from ..reference import TASKS
from ..variants import variant_config
from . import distributed, evaluate, inputs, loop, prepare
from .checkpoint import CheckpointMeta, build_model, load_checkpoint, restore_training_state, save_checkpoint
from .losses import REGRESSION_LOSSES, classification_loss, regression_loss
from .optim import build_ema, build_optimizer
from .progress import EpochLog, Eta, progress_enabled
from .records import write_json
from .schedule import warmup_cosine_lr, warmup_steps_for

# Fields that may differ between a run and its resumption without changing what is being trained.
# ``fold`` too: the processes that farm out one run's folds each train a different one.
_RESUME_FREE = ("resume", "progress", "tensorboard", "device", "num_threads", "fold")


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved as ``config.json`` and in every checkpoint)."""

    data: str | None = None  # CSV file or candle-store folder
    out: str = "runs/train"
    symbol: str = "BTCUSDT"
    symbols: tuple[str, ...] | None = None  # a universe from the store (one model over many symbols)
    universe: str | None = None  # "synthetic:N" or "synthetic:NxBARS": a SYNTHETIC universe
    norm_bars: int = 512  # universe: bars of each symbol's causal rolling z-score
    htf: tuple[int, ...] = ()  # universe: higher-timeframe channels, multiples of the interval (e.g. 4,24)
    symbol_embedding: bool = False  # universe: one-hot symbol channels = a learned per-symbol stem bias
    balanced: bool = True  # universe: sample every symbol equally often
    interval: str = "60"
    category: str = "linear"
    variant: str = "atto"
    dims: tuple[int, ...] | None = None  # override the variant (tiny test models)
    depths: tuple[int, ...] | None = None
    task: str = "classification"
    window: int = 256
    stride: int = 1
    max_windows: int | None = None  # keep only the newest windows: the fast path for CPU runs
    batch_size: int = 32
    epochs: int = 100
    warmup_epochs: float = 5.0
    lr: float = 4e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.05
    drop_path_rate: float = 0.1
    layer_scale_init: float = 1e-6
    label_smoothing: float = 0.1
    regression_loss: str = "huber"
    horizons: tuple[int, ...] = (1,)
    label: dict = field(default_factory=dict)  # LabelSpec fields
    features: dict = field(default_factory=dict)  # FeatureSpec.from_dict input ({} = the default spec)
    grad_clip: float = 1.0
    ema_decay: float | None = None
    precision: str = "fp32"
    patience: int = 10
    folds: int = 4
    test_bars: int | None = None  # per fold; default: the tests tile the newest half of the data
    val_bars: int | None = None  # default: test_bars
    train_bars: int | None = None  # None: expanding train segment; a number: rolling
    test_start: str | None = None  # e.g. "2024-01-01": one fold, tested on everything from then on
    fold: int | None = None  # train only this fold (0-based); None: every fold
    augment: bool = False
    seed: int = 0
    device: str = "auto"
    fused: bool = True
    backend: str = "auto"
    num_threads: int | None = None
    resume: bool = False
    progress: bool | None = None  # None: only on a terminal
    tensorboard: bool = False

    def __post_init__(self):
        self.dims = tuple(self.dims) if self.dims is not None else None
        self.depths = tuple(self.depths) if self.depths is not None else None
        self.horizons = tuple(int(h) for h in self.horizons)
        self.symbols = tuple(self.symbols) if self.symbols is not None else None
        self.htf = tuple(int(f) for f in self.htf)
        if self.symbols is not None and self.universe is not None:
            raise UserError("give --symbols (a store's) or --universe (SYNTHETIC), not both")
        if self.universe is not None:
            self.universe_size()
        positive = ("window", "stride", "batch_size", "epochs", "folds")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.window < 32:
            raise UserError(f"window must be >= 32 bars (the model's total stride), got {self.window}")
        if self.max_windows is not None and self.max_windows < 10:
            raise UserError(f"max_windows must be >= 10 (or unset), got {self.max_windows}")
        if self.task not in TASKS:
            raise UserError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.regression_loss not in REGRESSION_LOSSES:
            raise UserError(
                f"regression_loss must be one of {REGRESSION_LOSSES}, got {self.regression_loss!r}"
            )
        if self.precision not in loop.PRECISIONS:
            raise UserError(f"precision must be one of {loop.PRECISIONS}, got {self.precision!r}")
        if not self.horizons or min(self.horizons) < 1:
            raise UserError(f"horizons must be positive bar counts, got {self.horizons}")
        if self.patience < 1:
            raise UserError(f"patience must be >= 1, got {self.patience}")
        for name in ("test_bars", "val_bars", "train_bars"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")
        if self.test_start is not None:
            self.test_start_ms()
        n_folds = 1 if self.test_start is not None else self.folds
        if self.fold is not None and not 0 <= self.fold < n_folds:
            raise UserError(f"fold must be in [0, {n_folds}) (folds are numbered from 0), got {self.fold}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if (self.dims is None) != (self.depths is None):
            raise UserError("dims and depths override the variant together; give both or neither")
        if self.dims is None:
            try:
                variant_config(self.variant)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        self.feature_spec()
        self.label_spec()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def is_universe(self) -> bool:
        return self.symbols is not None or self.universe is not None

    def universe_size(self) -> tuple[int, int]:
        """``(symbols, bars)`` of ``universe="synthetic:N[xBARS]"``."""
        kind, _, size = str(self.universe).partition(":")
        n, _, bars = size.partition("x")
        try:
            if kind != "synthetic":
                raise ValueError
            count, length = int(n), int(bars or 4000)
        except ValueError:
            raise UserError(
                f"--universe {self.universe!r}: write synthetic:N or synthetic:NxBARS, e.g. synthetic:10x8760"
            ) from None
        if count < 1 or length < 1:
            raise UserError(f"--universe {self.universe!r}: need at least one symbol and one bar")
        return count, length

    def feature_spec(self):
        try:
            return inputs.FeatureSpec.from_dict(self.features) if self.features else inputs.FeatureSpec()
        except (TypeError, ValueError) as exc:
            raise UserError(f"features: {exc}") from None

    def label_spec(self):
        """The classification label spec (None for regression, whose targets are forward returns)."""
        if self.task != "classification":
            return None
        try:
            return inputs.LabelSpec.from_dict(self.label)
        except (TypeError, ValueError) as exc:
            raise UserError(f"label: {exc}") from None

    def test_start_ms(self) -> int | None:
        if self.test_start is None:
            return None
        try:
            return int(np.datetime64(self.test_start, "ms").astype(np.int64))
        except ValueError:
            raise UserError(f"test_start must be a date like 2024-01-01, got {self.test_start!r}") from None

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"train config has unknown keys {unknown}")
        return cls(**data)

    def model_kwargs(self, in_chans: int, num_outputs: int) -> dict:
        shape = {"dims": self.dims, "depths": self.depths} if self.dims else variant_config(self.variant)
        return {
            **shape,
            "in_chans": in_chans,
            "task": self.task,
            "num_outputs": num_outputs,
            "drop_path_rate": self.drop_path_rate,
            "layer_scale_init": self.layer_scale_init,
        }


@dataclass
class TrainResult:
    run_dir: Path
    folds: list[dict]
    pooled: dict  # {"model": metrics, "baselines": {name: metrics}}
    wall_s: float
    train_samples_per_s: float
    verdict: str = ""  # one line: model vs naive baselines, strategy vs buy-and-hold (test bars)


def _iso(ms: int) -> str:
    return np.datetime64(int(ms), "ms").astype(str)


class _Fold:
    """One walk-forward fold: its windows, normalised inputs, loaders and criterion."""

    def __init__(self, k: int, end_bars: dict, data: prepare.PreparedData, config: TrainConfig, ctx, device):
        self.k, self.config, self.ctx, self.device = k, config, ctx, device
        self.end_idx = end_bars
        for name, idx in self.end_idx.items():
            if len(idx) == 0:
                raise UserError(f"fold {k} has an empty {name} split; use fewer --folds or more data")
        universe = isinstance(data, prepare.UniverseData)
        if universe:  # normalised per symbol, causally, when the universe was built
            self.norm, features = prepare.identity_normalisation(data), data.features
        else:
            self.norm = prepare.normalisation(data.features, self.end_idx["train"], config.window)
            features = prepare.apply_normalisation(data.features, self.norm)
        targets = data.targets
        self.target_scale = None
        if config.task == "classification":
            y_train = targets[self.end_idx["train"]]
            self.naive = evaluate.class_prior(y_train)
            weights = torch.as_tensor(inputs.class_weights(y_train), dtype=torch.float32)
            self.criterion = classification_loss(weights.to(device), config.label_smoothing)
        else:
            self.naive = evaluate.mean_sign(targets[self.end_idx["train"]])
            self.target_scale = prepare.target_scale(targets, self.end_idx["train"])
            targets = (targets / np.asarray(self.target_scale, dtype=np.float32)).astype(np.float32)
            self.criterion = regression_loss(config.regression_loss)
        # kept to trade every bar of a split (single series), whatever --stride sampled for training
        self.features, self.targets = (None, None) if universe else (features, targets)
        if universe:
            self.datasets = {
                n: inputs.UniverseWindowDataset(data.universe, targets, idx, config.window)
                for n, idx in self.end_idx.items()
            }
        else:
            self.datasets = {
                n: inputs.WindowDataset(features, targets, idx, window=config.window)
                for n, idx in self.end_idx.items()
            }
        self.seed = config.seed * 1000 + k
        if universe and config.balanced:
            self.train_sampler = inputs.BalancedSampler(
                self.datasets["train"].symbol, num_replicas=ctx.world_size, rank=ctx.rank, seed=self.seed
            )
        else:
            # A DistributedSampler also in single-process runs: one code path, and its per-epoch shuffle
            # (seed + epoch) makes resumed runs draw the same batches.
            self.train_sampler = DistributedSampler(
                self.datasets["train"],
                num_replicas=ctx.world_size,
                rank=ctx.rank,
                shuffle=True,
                seed=self.seed,
                drop_last=True,
            )
        self.train_loader = _batches(
            self.datasets["train"], self.train_sampler, config.batch_size, drop_last=True
        )
        if len(self.train_loader) == 0:
            raise UserError(
                f"fold {k}: {len(self.end_idx['train'])} train windows are fewer than one batch per process"
            )
        # Validation is sharded over processes and its loss summed, so every process sees the same number.
        val_shard = range(ctx.rank, len(self.datasets["val"]), ctx.world_size)
        self.val_loader = _batches(self.datasets["val"], val_shard, 4 * config.batch_size)
        self.test_loader = _batches(
            self.datasets["test"], range(len(self.datasets["test"])), 4 * config.batch_size
        )

    def ranges(self, start_ms: np.ndarray) -> dict:
        # min/max, not first/last: a universe's end bars are ordered by symbol, then time.
        return {n: [_iso(start_ms[idx].min()), _iso(start_ms[idx].max())] for n, idx in self.end_idx.items()}

    def val_loss(self, model) -> float:
        """The training criterion on the validation windows (summed over processes, then averaged)."""
        outputs, targets = loop.predict(model, self.val_loader, self.device, self.config.precision)
        out, y = torch.from_numpy(outputs).to(self.device), torch.from_numpy(targets).to(self.device)
        if isinstance(self.criterion, torch.nn.CrossEntropyLoss) and self.criterion.weight is not None:
            weight = float(self.criterion.weight[y].sum()) if len(y) else 0.0
        else:
            weight = float(y.numel())
        numerator = float(self.criterion(out, y)) * weight if len(y) else 0.0
        numerator, weight = distributed.all_reduce_sum([numerator, weight], self.ctx, self.device)
        return numerator / weight

    def raw_outputs(self, model, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw model outputs and targets of every ``split`` window, in order (not sharded)."""
        loader = self.test_loader
        if split != "test":
            dataset = self.datasets[split]
            loader = _batches(dataset, range(len(dataset)), 4 * self.config.batch_size)
        return loop.predict(model, loader, self.device, self.config.precision)

    def every_bar_outputs(self, model, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(end bars, raw outputs)`` of a window ending at every bar from ``split``'s first window end to
        its last: the backtest decides at every bar, so τ is chosen (and tested) the same way even when
        ``--stride`` trained on every k-th window only."""
        idx = self.end_idx[split]
        bars = np.arange(idx.min(), idx.max() + 1)
        dataset = inputs.WindowDataset(self.features, self.targets, bars, window=self.config.window)
        loader = _batches(dataset, range(len(dataset)), 4 * self.config.batch_size)
        outputs, _ = loop.predict(model, loader, self.device, self.config.precision)
        return dataset.end_idx, outputs

    def test_outputs(self, model, raw=None) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (classification) or returns (regression) of the test windows, from ``raw``
        (:meth:`raw_outputs`) when given."""
        outputs, targets = raw if raw is not None else self.raw_outputs(model, "test")
        if self.config.task == "classification":
            return torch.softmax(torch.from_numpy(outputs), dim=1).numpy(), targets
        scale = np.asarray(self.target_scale, dtype=np.float32)
        return outputs * scale, targets * scale


def _batches(dataset, order, batch_size: int, drop_last: bool = False) -> DataLoader:
    """Whole batches gathered in one indexing call (WindowDataset accepts index lists)."""
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last), batch_size=None)


def _check_resume(run_dir: Path, config: TrainConfig) -> None:
    saved_path = run_dir / "config.json"
    if not saved_path.is_file():
        return
    saved, now = json.loads(saved_path.read_text()), config.to_dict()
    differ = sorted(k for k in now if k not in _RESUME_FREE and saved.get(k) != now[k])
    # One fold joins the folds others trained in the same folder, so it must match them even when fresh.
    if differ and (config.resume or config.fold is not None):
        flag = "--resume" if config.resume else f"--fold {config.fold}"
        raise UserError(f"{flag}: {run_dir} was trained with different settings for {differ}")
    if config.resume:
        return
    if config.fold is not None and (run_dir / f"fold_{config.fold}" / "result.json").exists():
        raise UserError(
            f"--out {run_dir} already holds a finished fold {config.fold}; pass --resume or pick another folder"
        )
    if config.fold is None and (run_dir / "results.json").exists():
        raise UserError(f"--out {run_dir} already holds a finished run; pass --resume or pick another folder")


def _fold_meta(
    config: TrainConfig, data: prepare.PreparedData, fold: _Fold, start_ms, model_config
) -> CheckpointMeta:
    return CheckpointMeta.from_dict(
        {
            "variant": config.variant if config.dims is None else None,
            "model": model_config,
            "task": config.task,
            "window": config.window,
            "feature_spec": data.feature_spec,
            "label_spec": data.label_spec,
            "normalisation": fold.norm,
            "target_scale": fold.target_scale,
            "fold": fold.k,
            "ranges": fold.ranges(start_ms),
            "train_config": config.to_dict(),
            **({"universe": data.universe.spec.to_dict()} if isinstance(data, prepare.UniverseData) else {}),
        },
        where=f"fold {fold.k} metadata",
    )


def _train_fold(fold: _Fold, config, data, log: EpochLog, fold_dir: Path, progress: bool) -> dict:
    ctx, device = fold.ctx, fold.device
    torch.manual_seed(fold.seed)
    model = build_model(
        config.model_kwargs(prepare.input_channels(data), _num_outputs(config)),
        fused=config.fused,
        backend=config.backend,
    ).to(device)
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    ema = build_ema(model, config.ema_decay) if config.ema_decay else None
    steps_per_epoch = len(fold.train_loader)
    total_steps = config.epochs * steps_per_epoch
    warmup = warmup_steps_for(config.warmup_epochs, config.epochs, steps_per_epoch)
    state = {
        "epoch": 0,
        "step": 0,
        "best_val": math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "train_samples": 0,
        "train_s": 0.0,
    }
    last, best = fold_dir / "last.safetensors", fold_dir / "best.safetensors"
    if config.resume and last.is_file():
        _, state = restore_training_state(last, model, ema=ema, optimizer=optimizer)
        state["best_val"] = math.inf if state["best_val"] is None else state["best_val"]  # JSON has no inf
    meta = _fold_meta(config, data, fold, data.start_ms, model.config)
    trained = (
        DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        if ctx.enabled
        else model
    )
    scaler = loop.grad_scaler(config.precision, device)
    eval_model = ema.module if ema is not None else model
    while state["epoch"] < config.epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"]
        # Seeding per epoch (not once per run) makes a resumed run draw the same shuffles, drop-path masks
        # and augmentations as an uninterrupted one.
        torch.manual_seed(fold.seed * 10_000 + epoch * 100 + ctx.rank)
        fold.train_sampler.set_epoch(epoch)
        augment = inputs.Augment(seed=fold.seed * 10_000 + epoch * 100 + ctx.rank) if config.augment else None
        stats = loop.train_epoch(
            trained,
            fold.train_loader,
            fold.criterion,
            optimizer,
            lr_at=lambda s: warmup_cosine_lr(
                s, total_steps, warmup, config.lr, min(config.min_lr, config.lr)
            ),
            first_step=state["step"],
            device=device,
            precision=config.precision,
            scaler=scaler,
            grad_clip=config.grad_clip,
            ema=ema,
            augment=augment,
            progress=progress,
            desc=f"fold {fold.k} epoch {epoch + 1}/{config.epochs}",
        )
        train_loss, samples = distributed.all_reduce_sum(
            [stats.loss * stats.samples, stats.samples], ctx, device
        )
        val_loss = fold.val_loss(eval_model)
        state.update(epoch=epoch + 1, step=state["step"] + stats.steps)
        state["train_samples"] += int(samples)
        state["train_s"] += stats.seconds
        improved = val_loss < state["best_val"]
        if improved:
            state.update(best_val=val_loss, best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        if ctx.is_main:
            if improved:
                save_checkpoint(
                    best, eval_model, meta.replace(metrics={"val_loss": val_loss, "epoch": epoch + 1})
                )
            save_checkpoint(last, model, meta, ema=ema, optimizer=optimizer, training_state=state)
            log.write(
                {
                    "fold": fold.k,
                    "epoch": epoch + 1,
                    "train_loss": train_loss / max(samples, 1),
                    "val_loss": val_loss,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_samples_per_s": samples / stats.seconds if stats.seconds > 0 else None,
                    "epoch_s": stats.seconds,
                    "best_epoch": state["best_epoch"],
                }
            )
        distributed.barrier(ctx)
    return state


def _num_outputs(config: TrainConfig) -> int:
    return 3 if config.task == "classification" else len(config.horizons)


def _finish_fold(fold: _Fold, state: dict, config, data, fold_dir: Path, candles=None) -> dict:
    """Score the best-validation weights on the test windows (main process only) and save the fold.
    With the run's ``candles`` (a single series) also choose τ on the validation windows and trade the
    test windows at it (:mod:`.fold_trading`)."""
    if state["best_epoch"] < 0:
        raise FloatingPointError(
            f"fold {fold.k}: the validation loss was never finite; lower --lr or check the data"
        )
    best_model, best_meta = load_checkpoint(
        fold_dir / "best.safetensors",
        fused=config.fused,
        backend=config.backend,
        device=fold.device,
        allow_universe=True,
    )
    raw_test = fold.raw_outputs(best_model, "test")
    outputs, targets = fold.test_outputs(best_model, raw_test)
    end_idx = fold.end_idx["test"]
    scores = evaluate.score(config.task, outputs, targets, data.close, end_idx, fold.naive)
    trading, traded = _trade_fold(fold, best_model, best_meta, candles, fold_dir)
    if trading:
        best_meta = best_meta.replace(threshold=trading["threshold"])
    np.savez(
        fold_dir / "predictions.npz",
        outputs=outputs,
        targets=targets,
        end_idx=end_idx,
        naive=np.broadcast_to(fold.naive, (len(end_idx), len(fold.naive))),
        **traded,
    )
    result = {
        "fold": fold.k,
        "ranges": fold.ranges(data.start_ms),
        "n_windows": {n: len(idx) for n, idx in fold.end_idx.items()},
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val"],
        "train_samples_per_s": state["train_samples"] / state["train_s"] if state["train_s"] > 0 else None,
        "train_s": state["train_s"],
        "test": scores,
        "checkpoint": str(fold_dir / "best.safetensors"),
        **({"trading": trading} if trading else {}),
    }
    save_checkpoint(
        fold_dir / "best.safetensors",
        best_model,
        best_meta.replace(metrics={**best_meta.metrics, "test": scores}),
    )
    write_json(fold_dir / "result.json", result)
    return result


def _trade_fold(fold: _Fold, model, meta: CheckpointMeta, candles, fold_dir: Path) -> tuple[dict, dict]:
    """``(record, arrays)``: τ chosen on the validation bars (every τ tried in ``threshold.json``) and the
    test bars traded at it, deciding at every bar as the backtest does; empty for a universe (no single
    price series to trade)."""
    if candles is None or isinstance(candles, dict) or fold.features is None:
        return {}, {}
    from ..trading.decision import DecisionPolicy
    from ..trading.report import periods_per_year_from
    from .fold_trading import choose_threshold, test_trading

    ppy = periods_per_year_from(np.asarray(candles.start_ms))
    policy = DecisionPolicy.from_meta(meta, 0.0, where=f"fold {fold.k}")
    choice = choose_threshold(policy, *fold.every_bar_outputs(model, "val"), candles, ppy)
    record, strategy, hold = test_trading(
        policy, choice.threshold, *fold.every_bar_outputs(model, "test"), candles, ppy
    )
    arrays = {"strategy_returns": strategy, "hold_returns": hold, "periods_per_year": np.float64(ppy)}
    write_json(fold_dir / "threshold.json", choice.to_dict())
    return {"threshold": choice.threshold, "threshold_rule": choice.rule, "test": record}, arrays


def pooled_scores(task: str, run_dir: Path, folds, close: np.ndarray) -> dict:
    """Metrics over the test bars of ``folds`` (a count: folds 0..n-1; or fold numbers) together, rebuilt
    from the saved predictions."""
    ks = range(folds) if isinstance(folds, int) else folds
    parts = [np.load(Path(run_dir) / f"fold_{k}" / "predictions.npz") for k in ks]
    cat = {key: np.concatenate([p[key] for p in parts]) for key in ("outputs", "targets", "end_idx", "naive")}
    return evaluate.score(task, cat["outputs"], cat["targets"], close, cat["end_idx"], cat["naive"])


def _verdict(task: str, run_dir: Path, folds, results: list[dict], pooled: dict) -> str:
    """The pooled test bars' verdict line (:mod:`convnext_fast.trading.verdict`), each fold trading at
    the τ chosen on its own validation windows."""
    from ..trading.verdict import skill_from_scores, verdict_line
    from .fold_trading import pooled_market

    ppy = [np.load(Path(run_dir) / f"fold_{k}" / "predictions.npz").get("periods_per_year") for k in folds]
    market = None
    if ppy and all(p is not None for p in ppy):
        market = pooled_market(run_dir, folds, results, float(ppy[0]))
    where = f"pooled test bars of {len(results)} fold(s), τ chosen on each fold's validation bars"
    return verdict_line(skill_from_scores(task, pooled), market, where)


def _samples_per_s(results: list[dict]) -> float:
    samples = sum(r["train_samples_per_s"] * r["train_s"] for r in results if r["train_samples_per_s"])
    seconds = sum(r["train_s"] for r in results)
    return samples / seconds if seconds > 0 else float("nan")


def _universe_series(config: TrainConfig, candles) -> list:
    """``(symbol, candles or loader)`` of the universe: given candles, a SYNTHETIC universe, or the store's
    series (each loaded only when its turn comes, so one symbol is in memory at a time)."""
    if isinstance(candles, dict):
        return list(candles.items())
    if config.universe is not None:
        n, bars = config.universe_size()
        step = inputs.interval_to_ms(config.interval)
        return list(inputs.synthetic_universe(n, bars, seed=config.seed, interval_ms=step).items())
    if config.data is None:
        raise UserError("--symbols needs --data <candle-store folder>")
    return [
        (s, lambda s=s: inputs.load_candles(config.data, s, config.interval, config.category))
        for s in config.symbols
    ]


def train(config: TrainConfig, *, candles=None) -> TrainResult | None:
    """Run walk-forward training. ``candles`` overrides ``config.data`` (handy for tests and notebooks); a
    ``{symbol: candles}`` dict trains one model over that universe.

    Under ``torchrun`` every process trains its share of each batch; only the main process writes files
    and returns a result (the others return None)."""
    start = time.perf_counter()
    device = distributed.pick_device(config.device, distributed.local_rank_from_env())
    ctx = distributed.setup(device)
    try:
        return _train(config, candles, ctx, device, start)
    finally:
        distributed.teardown(ctx)


def _train(config, candles, ctx, device, start) -> TrainResult | None:
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if not (config.is_universe() or isinstance(candles, dict)) and (config.htf or config.symbol_embedding):
        raise UserError("--htf and --symbol-embedding need a universe (--symbols or --universe)")
    if candles is None and not config.is_universe():
        if config.data is None:
            raise UserError("no data: pass --data <csv file or candle-store folder>")
        candles = inputs.load_candles(config.data, config.symbol, config.interval, config.category)
    run_dir = Path(config.out)
    one_fold = config.fold is not None
    if ctx.is_main:
        _check_resume(run_dir, config)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_dir = run_dir / f"fold_{config.fold}" if one_fold else run_dir
        log_dir.mkdir(exist_ok=True)
        if not config.resume:  # a fresh run must not append to an earlier run's log
            (log_dir / "metrics.jsonl").unlink(missing_ok=True)
        # Without the fold number, so every process farming out this run's folds writes the same file.
        write_json(run_dir / "config.json", {**config.to_dict(), "fold": None})
    distributed.barrier(ctx)
    feature_spec, label_spec = config.feature_spec(), config.label_spec()
    common = dict(
        task=config.task,
        window=config.window,
        stride=config.stride,
        feature_spec=feature_spec,
        label_spec=label_spec,
        horizons=config.horizons,
        max_windows=config.max_windows,
    )
    if config.is_universe() or isinstance(candles, dict):
        series = _universe_series(config, candles)
        spec = inputs.UniverseSpec(
            symbols=tuple(s for s, _ in series),
            norm_bars=config.norm_bars,
            htf=config.htf,
            symbol_embedding=config.symbol_embedding,
        )
        # One folder per process (rank, and fold when folds are farmed out): none writes another's files.
        # It holds only derived arrays and is removed once training ends.
        folder = (
            run_dir / "universe" / (f"fold{config.fold}-rank{ctx.rank}" if one_fold else f"rank{ctx.rank}")
        )
        data = prepare.prepare_universe(
            series, folder, spec=spec, interval_ms=inputs.interval_to_ms(config.interval), **common
        )
    else:
        data = prepare.prepare_data(candles, **common)
    splits = prepare.fold_end_bars(
        data,
        folds=config.folds,
        window=config.window,
        test_bars=config.test_bars,
        val_bars=config.val_bars,
        train_bars=config.train_bars,
        test_start_ms=config.test_start_ms(),
    )
    if one_fold and config.fold >= len(splits):  # --test-start makes a single fold
        raise UserError(f"fold must be in [0, {len(splits)}), got {config.fold}")
    progress = progress_enabled(config.progress) and ctx.is_main
    log_dir = run_dir / f"fold_{config.fold}" if one_fold else run_dir
    # One line per epoch on stderr, on a terminal too (where the batch bar is transient): it stays.
    eta = Eta(folds=1 if one_fold else len(splits), epochs=config.epochs)
    log = EpochLog(log_dir, tensorboard=config.tensorboard and ctx.is_main, echo=ctx.is_main, eta=eta)
    results = []
    try:
        for k, split in enumerate(splits):
            if one_fold and k != config.fold:
                continue
            fold_dir = run_dir / f"fold_{k}"
            if config.resume and (fold_dir / "result.json").is_file():
                results.append(json.loads((fold_dir / "result.json").read_text()))
                eta.fold_finished()
                continue
            fold_dir.mkdir(parents=True, exist_ok=True)
            fold = _Fold(k, split, data, config, ctx, device)
            state = _train_fold(fold, config, data, log, fold_dir, progress)
            if ctx.is_main:
                single = None if isinstance(data, prepare.UniverseData) else candles
                results.append(_finish_fold(fold, state, config, data, fold_dir, single))
            eta.fold_finished()
            distributed.barrier(ctx)
    finally:
        log.close()
        if isinstance(data, prepare.UniverseData):
            shutil.rmtree(data.universe.folder, ignore_errors=True)
    if not ctx.is_main:
        return None
    if one_fold:
        # Report every fold finished so far in this folder (by any process); pool the run once all are.
        done = [k for k in range(len(splits)) if (run_dir / f"fold_{k}" / "result.json").is_file()]
        results = [json.loads((run_dir / f"fold_{k}" / "result.json").read_text()) for k in done]
        pooled = pooled_scores(config.task, run_dir, done, data.close)
        if len(done) < len(splits):
            return TrainResult(
                run_dir=run_dir,
                folds=results,
                pooled=pooled,
                wall_s=time.perf_counter() - start,
                train_samples_per_s=_samples_per_s(results),
                verdict=_verdict(config.task, run_dir, done, results, pooled),
            )
    else:
        pooled = pooled_scores(config.task, run_dir, len(splits), data.close)
    result = TrainResult(
        run_dir=run_dir,
        folds=results,
        pooled=pooled,
        wall_s=time.perf_counter() - start,
        train_samples_per_s=_samples_per_s(results),
        verdict=_verdict(config.task, run_dir, [r["fold"] for r in results], results, pooled),
    )
    write_json(
        run_dir / "results.json",
        {
            "folds": results,
            "pooled": pooled,
            "wall_s": result.wall_s,
            "train_samples_per_s": result.train_samples_per_s,
            "world_size": ctx.world_size,
            "device": str(device),
            "verdict": result.verdict,
        },
    )
    return result
