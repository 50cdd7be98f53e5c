"""``--config FILE``: a TOML table goes through the command's own parser, so a bad value fails as the flag
would (never runs the command), errors name the file, table and key, and flags on the command line win."""

from __future__ import annotations

import argparse
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convnext_fast.cli import build_parser, main
from convnext_fast.cli.config import config_tokens

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ran(monkeypatch):
    """The namespaces each command's ``run`` was called with (the commands themselves never start)."""
    import importlib

    from convnext_fast.cli import COMMANDS

    calls: dict[str, list[argparse.Namespace]] = {}
    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        monkeypatch.setattr(mod, "run", lambda args, name=name: calls.setdefault(name, []).append(args) or 0)
    return calls


def _toml(tmp_path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convnext-fast: error:"), err
    return err[0]


def test_a_bogus_choice_in_a_file_fails_like_the_flag_and_runs_nothing(tmp_path, capsys, ran):
    with pytest.raises(SystemExit) as done:
        main(["live", "--source", "bogus"])
    assert done.value.code == 2 and "'bogus'" in capsys.readouterr().err
    path = _toml(tmp_path, '[live]\nsource = "bogus"\n')
    assert main(["--config", path, "live"]) == 2
    line = _one_error_line(capsys)
    assert f"--config {path!r} [live] source" in line and "'bogus'" in line and "synthetic" in line
    assert "live" not in ran, "the command ran despite the bad value"


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('window = "abc"', " window: expected an integer, got 'abc'"),
        ("window = 16", " window: must be >= 32"),
        ("window = 64.5", " window: expected an integer, got '64.5'"),
        ("max-bars = true", " max-bars: expected a value, got the boolean true"),
        ("resume = 1", " resume: --resume is a switch; write true or false, got 1"),
        ("threshold = [0.1, 0.2]", " threshold: expected a number >= 0 (e.g. 0.45) or 'auto'"),
        ("symbol = { a = 1 }", " symbol: expected a string or a number, got a dict"),
        ("no_such_option = 1", ": unknown option 'no_such_option'"),
        ("help = true", ": unknown option 'help'"),
        ("config = 'other.toml'", ": unknown option 'config'"),
    ],
)
def test_wrong_values_name_the_file_table_and_key(tmp_path, capsys, ran, table, needle):
    path = _toml(tmp_path, f"[live]\n{table}\n")
    assert main(["--config", path, "live"]) == 2
    line = _one_error_line(capsys)
    assert f"--config {path!r} [live]{needle}" in line, line
    assert "live" not in ran


def test_a_key_is_checked_even_when_a_flag_overrides_it(tmp_path, capsys, ran):
    path = _toml(tmp_path, '[live]\nsource = "bogus"\n')
    assert main(["--config", path, "live", "--source", "synthetic"]) == 2
    assert "source" in _one_error_line(capsys) and "live" not in ran


def test_flags_on_the_command_line_win_over_the_file(tmp_path, ran):
    path = _toml(tmp_path, '[live]\nsource = "rest"\nmax-bars = 7\nsymbol = "ETHUSDT"\nverbose = true\n')
    assert main(["live", "--max-bars", "3", "--config", path, "--symbol=SOLUSDT"]) == 0  # --config after too
    args = ran["live"][-1]
    assert (args.source, args.max_bars, args.symbol, args.verbose) == ("rest", 3, "SOLUSDT", True)


def test_a_file_may_supply_a_required_option_and_one_of_an_exclusive_group(tmp_path, ran):
    path = _toml(tmp_path, '[backtest]\ndata = "c.csv"\ncheckpoint = "m.safetensors"\n')
    assert main(["--config", path, "backtest"]) == 0
    assert (ran["backtest"][-1].data, ran["backtest"][-1].checkpoint) == ("c.csv", "m.safetensors")
    # The command line's --probs replaces the file's checkpoint (same group) instead of clashing with it.
    assert main(["--config", path, "backtest", "--probs", "p.npy"]) == 0
    assert (ran["backtest"][-1].probs, ran["backtest"][-1].checkpoint) == ("p.npy", None)


def test_toml_types_map_to_the_flags_text(tmp_path, ran):
    path = _toml(
        tmp_path,
        "[train]\nout = 'runs/x'\nsymbols = ['BTCUSDT', 'ETHUSDT']\nhtf = [4, 24]\nbalanced = false\n"
        "test-start = 2024-01-31\nlr = 1e-3\naugment = false\nsymbol-embedding = true\n",
    )
    assert main(["--config", path, "train"]) == 0
    args = ran["train"][-1]
    assert args.symbols == "BTCUSDT,ETHUSDT" and args.htf == (4, 24) and args.balanced is False
    assert args.test_start == "2024-01-31" and args.lr == 1e-3
    assert args.augment is False and args.symbol_embedding is True


def test_python_m_train_takes_a_config_file(tmp_path, capsys, ran):
    from convnext_fast.train.__main__ import main as train_main

    path = _toml(tmp_path, "[train]\nout = 'runs/t'\nepochs = 3\n")
    assert train_main(["--config", path, "--lr", "0.01"]) == 0
    args = ran["train"][-1]
    assert (args.out, args.epochs, args.lr) == ("runs/t", 3, 0.01)
    path = _toml(tmp_path, "[train]\nout = 'runs/t'\nepochs = 0\n")
    assert train_main(["--config", path]) == 2
    assert "[train] epochs: must be >= 1" in _one_error_line(capsys)


def test_tables_of_other_commands_are_ignored_but_unknown_tables_are_not(tmp_path, capsys, ran):
    path = _toml(tmp_path, "[train]\nepochs = 'x'\n[live]\nmax-bars = 2\n")
    assert main(["--config", path, "live"]) == 0 and ran["live"][-1].max_bars == 2
    path = _toml(tmp_path, "[nope]\nx = 1\n")
    assert main(["--config", path, "live"]) == 2
    assert "unknown table(s) ['nope']" in _one_error_line(capsys)


def test_a_file_that_is_not_toml_is_one_line(tmp_path, capsys, ran):
    path = _toml(tmp_path, "[live\n")
    assert main(["--config", path, "live"]) == 2
    assert "is not valid TOML" in _one_error_line(capsys)


# ------------------------------------------------------------------------------- property: file == flags

_TRAIN_VALUES = {
    "epochs": st.integers(1, 10_000),
    "lr": st.floats(1e-8, 10.0, allow_nan=False, allow_infinity=False),
    "variant": st.sampled_from(["atto", "femto", "pico", "nano", "tiny"]),
    "balanced": st.booleans(),
    "augment": st.booleans(),
    "htf": st.lists(st.integers(1, 48), min_size=1, max_size=3),
    "symbol": st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=12),
    "test-start": st.dates().map(lambda d: d.isoformat()),
    "horizons": st.lists(st.integers(1, 100), min_size=1, max_size=4),
    "val-bars": st.integers(0, 10_000),
    "interval": st.sampled_from(["1", "60", "D"]),
    "precision": st.sampled_from(["fp32", "bf16"]),
}


def _as_flags(table: dict) -> list[str]:
    flags = []
    for key, value in table.items():
        if isinstance(value, bool):
            flags.append(f"--{key}" if value else ("--no-balanced" if key == "balanced" else ""))
        elif isinstance(value, list):
            flags += [f"--{key}", ",".join(map(str, value))]
        else:
            flags += [f"--{key}", repr(value) if isinstance(value, float) else str(value)]
    return [f for f in flags if f]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.dictionaries(st.sampled_from(sorted(_TRAIN_VALUES)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({k: _TRAIN_VALUES[k] for k in keys})
))  # fmt: skip
def test_a_table_parses_to_the_same_options_as_its_flags(table):
    _, subparsers = build_parser("train")
    parser = subparsers["train"]
    from_file = parser.parse_args([*config_tokens(parser, table, [], "t.toml [train]"), "--out", "o"])
    from_flags = parser.parse_args([*_as_flags(table), "--out", "o"])
    assert vars(from_file) == vars(from_flags)
