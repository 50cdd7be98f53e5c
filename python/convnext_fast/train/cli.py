"""``convnext-fast train`` (and ``python -m convnext_fast.train``, also under ``torchrun``).

Defaults are TrainConfig's, written out here because the trainer imports torch and ``--help`` must not;
tests/cli/test_options.py holds the two equal.
"""

from __future__ import annotations

import argparse
import sys

from ..cli import argtypes, options
from ..cli.argtypes import (
    int_at_least,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_tuple,
)
from ..errors import UserError
from .choices import LABEL_KINDS, MODELS, PRECISIONS, REGRESSION_LOSSES, TASKS

float_fraction = argtypes.float_in(0.0, 1.0)
decay = argtypes.float_in(0.0, 1.0, open_low=True, open_high=True)


def add_arguments(parser: argparse.ArgumentParser, *, farm_out: bool = True) -> None:
    """Every training option. ``farm_out=False`` leaves out --fold and --resume (tune, which trains every
    fold of each trial itself and resumes through its study)."""
    data = parser.add_argument_group("data")
    options.add(data, "data", help="candle CSV file or candle-store folder (not needed for --universe)")
    options.add(data, "symbol", help="symbol in a candle store")
    options.add(data, "interval", help="interval in a candle store")
    options.add(data, "window", help="bars per sample, T")
    data.add_argument("--stride", type=positive_int, default=1, help="bars between samples")
    data.add_argument(
        "--max-windows",
        type=int_at_least(10),
        default=None,
        help="keep only the newest N samples (fast CPU runs; a universe splits N evenly over its symbols)",
    )
    data.add_argument(
        "--augment", action="store_true", help="train-time augmentation (slicing, warping, scaling, jitter)"
    )

    uni = parser.add_argument_group("universe (one model over many symbols)")
    options.add(uni, "symbols", help="comma-separated symbols of the --data store, e.g. BTCUSDT,ETHUSDT")
    uni.add_argument(
        "--universe", default=None, help="a SYNTHETIC universe instead: synthetic:N or synthetic:NxBARS"
    )
    uni.add_argument(
        "--norm-bars", type=positive_int, default=512, help="per-symbol causal z-score length in bars"
    )
    uni.add_argument(
        "--htf",
        type=positive_int_tuple,
        default=(),
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
        default=True,
        help="sample every symbol equally often",
    )

    target = parser.add_argument_group("target")
    target.add_argument("--task", choices=TASKS, default="classification", help="what the model predicts")
    target.add_argument(
        "--label-kind", choices=LABEL_KINDS, default=None, help="classification labels (default fixed)"
    )
    target.add_argument("--horizon", type=positive_int, default=None, help="label horizon in bars")
    target.add_argument(
        "--threshold",
        type=non_negative_float,
        default=None,
        help="log-return threshold of the fixed labels (not the trading τ)",
    )
    target.add_argument(
        "--k",
        type=positive_float,
        default=None,
        help="volatility multiple of the volatility/triple-barrier labels",
    )
    target.add_argument(
        "--horizons", type=positive_int_tuple, default=(1,), help="regression horizons in bars, e.g. 1,4,12"
    )
    target.add_argument(
        "--regression-loss", choices=REGRESSION_LOSSES, default="huber", help="regression criterion"
    )

    model = parser.add_argument_group("model")
    options.add(model, "variant")
    model.add_argument(
        "--dims", type=positive_int_tuple, default=None, help="override the variant: 4 stage widths"
    )
    model.add_argument(
        "--depths", type=positive_int_tuple, default=None, help="override the variant: 4 stage depths"
    )
    model.add_argument("--model", choices=MODELS, default="fused", help="which implementation trains")
    options.add(model, "backend")
    model.add_argument(
        "--drop-path", type=float_fraction, default=0.1, help="stochastic-depth rate of the deepest block"
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=positive_int, default=100, help="epochs per fold (at most)")
    optim.add_argument("--batch-size", type=positive_int, default=32, help="windows per step")
    optim.add_argument("--lr", type=positive_float, default=4e-4, help="peak AdamW learning rate")
    optim.add_argument("--weight-decay", type=non_negative_float, default=0.05, help="AdamW weight decay")
    optim.add_argument(
        "--warmup-epochs", type=non_negative_float, default=5.0, help="linear warm-up before the cosine decay"
    )
    optim.add_argument(
        "--label-smoothing", type=float_fraction, default=0.1, help="cross-entropy label smoothing"
    )
    optim.add_argument("--grad-clip", type=non_negative_float, default=1.0, help="max gradient norm (0: off)")
    optim.add_argument(
        "--ema-decay",
        type=decay,
        default=None,
        help="keep an EMA of the weights, e.g. 0.999 (default off)",
    )
    optim.add_argument("--precision", choices=PRECISIONS, default="fp32", help="autocast precision")
    optim.add_argument("--patience", type=positive_int, default=10, help="early-stopping patience in epochs")
    options.add(optim, "seed")

    wf = parser.add_argument_group("walk-forward")
    wf.add_argument("--folds", type=positive_int, default=4, help="walk-forward folds (test blocks)")
    wf.add_argument(
        "--test-bars",
        type=positive_int,
        default=None,
        help="bars per test block (default: the tests tile the newest half (a quarter for one fold))",
    )
    wf.add_argument(
        "--val-bars",
        type=non_negative_int,
        default=None,
        help="validation bars per fold (default: --test-bars; 0: none)",
    )
    wf.add_argument(
        "--train-bars",
        type=positive_int,
        default=None,
        help="rolling train length in bars (default: expanding)",
    )
    wf.add_argument(
        "--test-start", default=None, help="one fold tested on every bar from this date, e.g. 2024-01-01"
    )
    if farm_out:
        wf.add_argument(
            "--fold",
            type=non_negative_int,
            default=None,
            help="train only fold K (0-based) into --out, to farm folds out; the last one pools results.json",
        )

    run = parser.add_argument_group("run")
    options.add(
        run,
        "out",
        required=True,
        help="run folder (checkpoints, metrics.jsonl, results.json), e.g. runs/train",
    )
    if farm_out:
        run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    run.add_argument(
        "--num-threads",
        type=positive_int,
        default=None,
        help="torch CPU threads per process (default: torch's)",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: on a terminal)",
    )
    run.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (if installed)")


def config_from_args(args: argparse.Namespace):
    """The :class:`~convnext_fast.train.TrainConfig` of the parsed options."""
    from .trainer import TrainConfig

    _check_combinations(args)
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
        fold=getattr(args, "fold", None),
        augment=args.augment,
        seed=args.seed,
        device=args.device,
        fused=args.model == "fused",
        backend=args.backend,
        num_threads=args.num_threads,
        resume=getattr(args, "resume", False),
        progress=args.progress,
        tensorboard=args.tensorboard,
    )


def _check_combinations(args: argparse.Namespace) -> None:
    """What no single flag's type can check, worded in flags (TrainConfig says it in field names)."""
    if (args.dims is None) != (args.depths is None):
        raise UserError("--dims and --depths override the variant together; give both or neither")
    fold = getattr(args, "fold", None)
    n_folds = 1 if args.test_start is not None else args.folds
    if fold is not None and fold >= n_folds:
        why = "--test-start makes one fold" if args.test_start is not None else f"--folds {args.folds}"
        raise UserError(f"--fold must be in [0, {n_folds}) (folds are numbered from 0; {why}), got {fold}")


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
