"""``convnext-fast train`` (and ``python -m convnext_fast.train``, also under ``torchrun``)."""

from __future__ import annotations

import argparse
import sys

from ..backends import BACKENDS
from ..variants import VARIANTS
from .loop import PRECISIONS
from .losses import REGRESSION_LOSSES
from .trainer import TrainConfig

_LABEL_KINDS = ("fixed", "volatility", "triple_barrier")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", default=None, help="candle CSV file or candle-store folder (not needed for --universe)"
    )
    data.add_argument("--symbol", default=d.symbol, help="symbol in a candle store (default %(default)s)")
    data.add_argument(
        "--interval", default=d.interval, help="interval in a candle store (default %(default)s)"
    )
    data.add_argument("--window", type=int, default=d.window, help="bars per sample, T (default %(default)s)")
    data.add_argument(
        "--stride", type=int, default=d.stride, help="bars between samples (default %(default)s)"
    )
    data.add_argument(
        "--max-windows",
        type=int,
        default=None,
        help="keep only the newest N samples (fast CPU runs; a universe splits N evenly over its symbols)",
    )
    data.add_argument(
        "--augment", action="store_true", help="train-time augmentation (slicing, warping, scaling, jitter)"
    )

    uni = parser.add_argument_group("universe (one model over many symbols)")
    uni.add_argument(
        "--symbols", default=None, help="comma-separated symbols of the --data store, e.g. BTCUSDT,ETHUSDT"
    )
    uni.add_argument(
        "--universe", default=None, help="a SYNTHETIC universe instead: synthetic:N or synthetic:NxBARS"
    )
    uni.add_argument(
        "--norm-bars",
        type=int,
        default=d.norm_bars,
        help="per-symbol causal z-score length (default %(default)s)",
    )
    uni.add_argument(
        "--htf",
        type=_int_tuple,
        default=d.htf,
        help="higher-timeframe channels as interval multiples, e.g. 4,24",
    )
    uni.add_argument(
        "--symbol-embedding",
        action="store_true",
        help="a learned per-symbol bias at the stem (one-hot channels)",
    )
    uni.add_argument(
        "--balanced",
        action=argparse.BooleanOptionalAction,
        default=d.balanced,
        help="sample every symbol equally often (default on)",
    )

    target = parser.add_argument_group("target")
    target.add_argument("--task", choices=("classification", "regression"), default=d.task)
    target.add_argument(
        "--label-kind", choices=_LABEL_KINDS, default=None, help="classification labels (default fixed)"
    )
    target.add_argument("--horizon", type=int, default=None, help="label horizon in bars")
    target.add_argument("--threshold", type=float, default=None, help="log-return threshold for fixed labels")
    target.add_argument(
        "--k", type=float, default=None, help="volatility multiple for volatility/triple-barrier labels"
    )
    target.add_argument(
        "--horizons", type=_int_tuple, default=d.horizons, help="regression horizons, e.g. 1,4,12"
    )
    target.add_argument("--regression-loss", choices=REGRESSION_LOSSES, default=d.regression_loss)

    model = parser.add_argument_group("model")
    model.add_argument("--variant", choices=tuple(VARIANTS), default=d.variant)
    model.add_argument("--dims", type=_int_tuple, default=None, help="override the variant: 4 stage widths")
    model.add_argument("--depths", type=_int_tuple, default=None, help="override the variant: 4 stage depths")
    model.add_argument(
        "--model", choices=("fused", "reference"), default="fused", help="which implementation trains"
    )
    model.add_argument("--backend", choices=BACKENDS, default=d.backend)
    model.add_argument("--drop-path", type=float, default=d.drop_path_rate)

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=int, default=d.epochs)
    optim.add_argument("--batch-size", type=int, default=d.batch_size)
    optim.add_argument("--lr", type=float, default=d.lr)
    optim.add_argument("--weight-decay", type=float, default=d.weight_decay)
    optim.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    optim.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    optim.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: off)")
    optim.add_argument("--ema-decay", type=float, default=None, help="keep an EMA of the weights, e.g. 0.999")
    optim.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    optim.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience in epochs")
    optim.add_argument("--seed", type=int, default=d.seed)

    wf = parser.add_argument_group("walk-forward")
    wf.add_argument("--folds", type=int, default=d.folds)
    wf.add_argument(
        "--test-bars",
        type=int,
        default=None,
        help="bars per test block (default: the tests tile the newest half (a quarter for one fold))",
    )
    wf.add_argument(
        "--val-bars", type=int, default=None, help="validation bars per fold (default: --test-bars)"
    )
    wf.add_argument("--train-bars", type=int, default=None, help="rolling train length (default: expanding)")
    wf.add_argument(
        "--test-start", default=None, help="one fold tested on every bar from this date, e.g. 2024-01-01"
    )
    wf.add_argument(
        "--fold",
        type=int,
        default=None,
        help="train only fold K (0-based) into --out, to farm folds out; the last one pools results.json",
    )

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, results.json)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--device", default=d.device, help="auto, cpu or cuda[:N]")
    run.add_argument("--num-threads", type=int, default=None, help="torch CPU threads per process")
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: on a terminal)",
    )
    run.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (if installed)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    label = {
        key: value
        for key, value in (
            ("kind", args.label_kind),
            ("horizon", args.horizon),
            ("threshold", args.threshold),
            ("k", args.k),
        )
        if value is not None
    }
    return TrainConfig(
        data=args.data,
        out=args.out,
        symbol=args.symbol,
        symbols=_symbols(args.symbols),
        universe=args.universe,
        norm_bars=args.norm_bars,
        htf=args.htf,
        symbol_embedding=args.symbol_embedding,
        balanced=args.balanced,
        interval=args.interval,
        variant=args.variant,
        dims=args.dims,
        depths=args.depths,
        task=args.task,
        window=args.window,
        stride=args.stride,
        max_windows=args.max_windows,
        batch_size=args.batch_size,
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        drop_path_rate=args.drop_path,
        label_smoothing=args.label_smoothing,
        regression_loss=args.regression_loss,
        horizons=args.horizons,
        label=label,
        grad_clip=args.grad_clip,
        ema_decay=args.ema_decay,
        precision=args.precision,
        patience=args.patience,
        folds=args.folds,
        test_bars=args.test_bars,
        val_bars=args.val_bars,
        train_bars=args.train_bars,
        test_start=args.test_start,
        fold=args.fold,
        augment=args.augment,
        seed=args.seed,
        device=args.device,
        fused=args.model == "fused",
        backend=args.backend,
        num_threads=args.num_threads,
        resume=args.resume,
        progress=args.progress,
        tensorboard=args.tensorboard,
    )


def _symbols(text: str | None) -> tuple[str, ...] | None:
    from ..data.cli import parse_symbols

    return tuple(parse_symbols(text)) if text else None


def run(args: argparse.Namespace) -> int:
    from .summary import results_table, trading_table
    from .trainer import train

    config = config_from_args(args)
    result = train(config)
    if result is not None:  # None on the non-main processes of a torchrun job
        print(results_table(config.task, result.folds, result.pooled))
        trading = trading_table(result.folds)
        print(f"\n{trading}\n\n{result.verdict}" if trading else f"\n{result.verdict}")
        pooled = result.run_dir / "results.json"
        where = (
            f"results in {pooled}"
            if pooled.is_file()
            else f"fold {config.fold} in {result.run_dir / f'fold_{config.fold}'} (results.json comes "
            "once every fold is done)"
        )
        print(
            f"\nwall {result.wall_s:.1f} s, training {result.train_samples_per_s:.1f} samples/s; {where}",
            file=sys.stdout,
        )
    return 0
