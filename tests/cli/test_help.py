"""Help text and start-up: every ``--help`` answers without importing torch/numba/matplotlib (asserted on
imports, not on a timing, which a shared machine makes flaky), each default is printed once, every option
says what it does, and no default output lands in the working directory's root."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convnext_fast.cli import COMMANDS, build_parser
from tests.child_env import child_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)
HEAVY = ("torch", "numba", "matplotlib", "pyarrow", "optuna", "scipy")


def _python(code: str, *args: str) -> subprocess.CompletedProcess:

    env = child_env()
    return subprocess.run(
        [sys.executable, *args, "-c", code] if code else [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


def test_no_help_imports_a_heavy_library():
    """Every command's --help (and the top level's) in a fresh interpreter, then the loaded modules."""
    code = f"""
import contextlib, io, json, sys
from convnext_fast.cli import COMMANDS, main
seen = {{}}
for argv in [["--help"], *[[c, "--help"] for c in COMMANDS]]:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv)
        except SystemExit as done:
            assert done.code == 0, (argv, done.code)
    assert out.getvalue().startswith("usage:"), argv
    seen[" ".join(argv)] = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps(seen))
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert set(seen) == {"--help", *(f"{c} --help" for c in COMMANDS)}
    assert all(loaded == [] for loaded in seen.values()), seen


@pytest.mark.parametrize("module", ["convnext_fast.live", "convnext_fast.train", "convnext_fast.cli"])
def test_python_m_help_imports_no_heavy_library(module):
    done = _python("", "-X", "importtime", "-m", module, "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_importing_the_fused_model_does_not_import_dynamo():
    done = _python("import sys, convnext_fast.model; print('torch._dynamo' in sys.modules)")
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr


def test_the_hand_set_compile_mark_is_the_one_the_decorator_sets():
    """model.backend_for carries assume_constant_result's mark without calling it (which imports dynamo)."""
    import torch

    from convnext_fast.model import backend_for

    def probe():
        return None

    marked = torch.compiler.assume_constant_result(probe)
    added = set(vars(marked)) - set(vars(lambda: None))
    assert added == {"_dynamo_marked_constant"} and marked._dynamo_marked_constant is True
    assert backend_for._dynamo_marked_constant is True


def _parsers():
    for command in COMMANDS:
        _, subparsers = build_parser(command)
        yield command, subparsers[command]


def _option_actions(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if a.option_strings and a.help is not argparse.SUPPRESS]


@pytest.mark.parametrize(("command", "parser"), list(_parsers()), ids=list(COMMANDS))
def test_each_default_is_printed_once_and_every_option_is_explained(command, parser):
    formatter = parser._get_formatter()
    for action in _option_actions(parser):
        flag = action.option_strings[-1]
        assert action.help and action.help.strip(), f"{command} {flag} has no help"
        text = formatter._expand_help(action)
        assert len(re.findall(r"\bdefault\b", text, re.IGNORECASE)) <= 1, f"{command} {flag}: {text!r}"
        shown = action.default not in (None, False, argparse.SUPPRESS) and flag != "--help"
        if shown:
            from convnext_fast.cli.options import show_default

            assert re.search(r"\bdefault\b", text, re.IGNORECASE), f"{command} {flag} hides its default"
            if "%(default)" in (action.help or "") or "(default: " in text:
                assert show_default(action.default) in text or str(action.default) in text, (flag, text)


def test_train_help_shows_the_optimisation_defaults(capsys):
    from convnext_fast.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in (
        "--epochs EPOCHS epochs per fold (at most) (default: 100)",
        "(default: 0.0004)",
        "(default: 32)",
    ):
        assert needle in text
    assert "(default BTCUSDT) (default: BTCUSDT)" not in text and text.count("(default: BTCUSDT)") == 1


def test_tune_help_does_not_offer_what_tune_refuses(capsys):
    from convnext_fast.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    text = capsys.readouterr().out
    assert "--n-trials" in text and "--folds" in text
    assert "--fold " not in text and "--fold]" not in text and "--resume" not in text


def test_no_default_output_lands_in_the_working_directory_root():
    """Every option that names where something is written defaults under runs/ (git-ignored) or is
    required; its help says where."""
    outputs = {"out", "state", "store"}
    checked = 0
    for command, parser in _parsers():
        for action in _option_actions(parser):
            if action.dest in outputs and isinstance(action.default, str):
                assert action.default.startswith("runs/"), (command, action.dest, action.default)
                assert action.default in action.help, (command, action.dest, action.help)
                checked += 1
    assert checked >= 4  # fetch --store, backtest --out, live --state, demo --out
