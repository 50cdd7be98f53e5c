"""The option registry: its defaults and choices equal the library's (written out there so that --help
imports neither torch nor numba, so these tests are what keeps the two from drifting), its types reject
what the library would reject with the flag's name, and --folds errors speak the user's terms."""

from __future__ import annotations

import argparse

import pytest

from convnext_fast.cli import build_parser, options

pytestmark = pytest.mark.timeout(120)


def _parser(command: str) -> argparse.ArgumentParser:
    return build_parser(command)[1][command]


def test_train_defaults_are_train_configs():
    from convnext_fast.train import TrainConfig
    from convnext_fast.train.cli import config_from_args

    assert config_from_args(_parser("train").parse_args(["--out", "o"])) == TrainConfig(out="o")
    assert config_from_args(_parser("tune").parse_args(["--out", "o"])) == TrainConfig(out="o")


@pytest.mark.parametrize("command", ["backtest", "live"])
def test_trading_rule_and_sizing_defaults_are_the_librarys(command):
    from convnext_fast.trading.backtest import BacktestConfig, config_from_args
    from convnext_fast.trading.sizing import SizingRule, sizing_from_args

    required = ["--data", "x", "--signals", "s.npy"] if command == "backtest" else []
    args = _parser(command).parse_args(required)
    assert config_from_args(args) == BacktestConfig()
    assert sizing_from_args(args, BacktestConfig(), 8760.0) == SizingRule(periods_per_year=8760.0)


def test_choices_are_the_librarys():
    from convnext_fast.backends import BACKENDS
    from convnext_fast.data.candles import INTERVALS
    from convnext_fast.data.labels import LABEL_KINDS
    from convnext_fast.live.predictor import PREDICTOR_BACKENDS
    from convnext_fast.reference import TASKS
    from convnext_fast.trading import backtest, portfolio, sizing
    from convnext_fast.trading.cli import PORTFOLIO_SIZINGS
    from convnext_fast.train import choices

    assert options.INTERVALS == INTERVALS
    assert options.ORDER_TYPES == backtest.ORDER_TYPES
    assert options.SIZING_METHODS == sizing.SIZINGS
    assert PORTFOLIO_SIZINGS == portfolio.SIZINGS
    assert choices.LABEL_KINDS == LABEL_KINDS and choices.TASKS == TASKS
    assert PREDICTOR_BACKENDS == BACKENDS


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--window", "16"], "argument --window: must be >= 32 (the model's total stride), got 16"),
        (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
        (["--folds", "-2"], "argument --folds: must be >= 1, got -2"),
        (["--max-windows", "5"], "argument --max-windows: must be >= 10, got 5"),
        (["--lr", "0"], "argument --lr: must be > 0, got 0"),
        (["--lr", "nan"], "argument --lr: must be > 0, got nan"),
        (["--label-smoothing", "1.5"], "argument --label-smoothing: must be >= 0 and <= 1, got 1.5"),
        (["--htf", "4,x"], "argument --htf: expected comma-separated integers, got '4,x'"),
        (["--symbols", "A,,B"], "argument --symbols: 'A,,B' has an empty name"),
        (["--interval", "7"], "argument --interval: invalid choice: '7'"),
        (["--ema-decay", "1"], "argument --ema-decay: must be > 0 and < 1, got 1"),
        (["--horizons", "4,0"], "argument --horizons: expected positive integers, got '4,0'"),
    ],
)
def test_bad_training_flags_name_the_flag(argv, needle, capsys):
    with pytest.raises(SystemExit) as done:
        _parser("train").parse_args([*argv, "--out", "o"])
    assert done.value.code == 2 and needle in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--dims", "8,16,32,64"], "--dims and --depths override the variant together"),
        (["--folds", "2", "--fold", "2"], "--fold must be in [0, 2) (folds are numbered from 0; --folds 2), got 2"),
        (["--test-start", "2024-01-01", "--fold", "1"], "--fold must be in [0, 1) (folds are numbered from 0; "
         "--test-start makes one fold), got 1"),
    ],
)  # fmt: skip
def test_flag_combinations_are_worded_in_flags(argv, needle):
    from convnext_fast.errors import UserError
    from convnext_fast.train.cli import config_from_args

    with pytest.raises(UserError) as info:
        config_from_args(_parser("train").parse_args([*argv, "--out", "o"]))
    assert needle in str(info.value)


def test_too_many_folds_name_folds_and_the_most_that_fit():
    from convnext_fast.data.arg_checks import DatasetArgumentError
    from convnext_fast.data.dataset import walk_forward_splits as raw_splits
    from convnext_fast.errors import UserError
    from convnext_fast.train import inputs

    n, gap = 626, dict(horizon=4, window=64)
    with pytest.raises(UserError, match=r"^--folds 500 does not fit the data: 626 usable bars .* allow at most "
                       r"--folds (\d+)$") as info:  # fmt: skip
        inputs.walk_forward_splits(n, 500, **gap)
    most = int(info.value.args[0].rsplit(" ", 1)[1])
    assert len(inputs.walk_forward_splits(n, most, **gap)) == most  # the hint works ...
    with pytest.raises(UserError):
        inputs.walk_forward_splits(n, most + 1, **gap)  # ... and is the largest that does
    with pytest.raises(DatasetArgumentError, match="test_size"):  # what the user used to read
        raw_splits(n, 500, test_size=n // 1000, **gap)

    with pytest.raises(
        UserError, match=r"with these --test-bars/--val-bars/--train-bars allow at most --folds 3$"
    ):
        inputs.walk_forward_splits(n, 30, test_size=100, **gap)
    with pytest.raises(UserError, match="not even one fold: use more data"):
        inputs.walk_forward_splits(100, 3, **gap)


def test_train_folds_error_reaches_the_user_in_one_line(tmp_path, capsys):
    """End to end through `convnext-fast train`: a short series and too many folds fail before training."""
    from convnext_fast.cli import main
    from convnext_fast.data.synthetic import synthetic_candles

    from ..train.tiny_run import TINY_ARGS, write_candles_csv

    write_candles_csv(synthetic_candles(700, seed=3), tmp_path / "c.csv")
    out = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "c.csv"), *TINY_ARGS, "--folds", "500", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convnext-fast: error: --folds 500 does not fit the data"), err
    assert "test_size" not in err[0] and not list(out.glob("fold_*"))


def test_registry_overrides_apply_to_one_option_only():
    parser = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="one option"):
        options.add(parser, "data", "symbol", required=True)
    options.add(parser, "data", required=True)
    with pytest.raises(SystemExit):
        parser.parse_args([])
