"""``convnext-fast tune``: its options (the training ones, less those a study manages itself, plus the
search's); the search is :mod:`convnext_fast.train.tune`, imported only when the command runs."""

from __future__ import annotations

import argparse

from ..cli import argtypes
from .cli import add_arguments as add_train_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_train_arguments(parser, farm_out=False)  # base settings; the search overrides the searched ones
    # Not offered (each trial trains every fold itself; a study resumes through its database), but still
    # recognised so that typing them gets tune's own explanation rather than "unrecognized arguments".
    parser.add_argument("--fold", type=argtypes.non_negative_int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    tune = parser.add_argument_group("search")
    tune.add_argument("--space", help="TOML/JSON search space (default: a space around the base settings)")
    tune.add_argument(
        "--metric",
        default=None,
        help="pooled out-of-sample score (default: balanced_accuracy, or ic for regression): "
        "balanced_accuracy, macro_f1, accuracy, direction_accuracy, log_loss; ic, rank_ic, mse; or a "
        "backtest of the pooled signals: sharpe, total_return, calmar",
    )
    tune.add_argument("--storage", default=None, help="study database (default sqlite:///OUT/study.db)")
    tune.add_argument("--study-name", default="convnext-fast", help="study in the database to create or join")
    tune.add_argument(
        "--n-trials",
        type=argtypes.non_negative_int,
        default=20,
        help="trials this process runs (0: only report)",
    )
    tune.add_argument(
        "--timeout", type=argtypes.positive_float, default=None, help="stop starting trials after this many s"
    )
    tune.add_argument("--pruner", choices=("median", "none"), default="median", help="early pruning per fold")
    tune.add_argument(
        "--sampler-seed",
        type=argtypes.non_negative_int,
        default=None,
        help="TPE sampler seed (default: random; give each worker its own)",
    )


def run(args: argparse.Namespace) -> int:
    from .tune import run as run_tune

    return run_tune(args)
