"""The README must tell the truth: its Python snippets run, its CSV example reads as documented, its test
command is the one the setup script (and so CI) runs, and its commands write only under ``runs/``, each to
its own place."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README) if lang == language]


def commands(block: str) -> list[list[str]]:
    """Shell commands of a bash block as argument lists: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", block)
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


PYTHON_BLOCKS = blocks("python")


def test_the_readme_has_a_python_snippet():
    assert PYTHON_BLOCKS, "the drop-in snippet is gone (or lost its ```python fence)"


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes stays out of the repository
    code = compile(PYTHON_BLOCKS[index], f"README.md python block {index}", "exec")
    exec(code, {"__name__": "__readme__"})


def test_csv_example_reads_as_documented(tmp_path):
    from convnext_fast.data.candles import Candles

    section = README[README.index("### CSV format") :]
    example = next(body for lang, body in FENCE.findall(section) if body.startswith("timestamp,"))
    rows = [line.split(",") for line in example.strip().splitlines()[1:]]
    path = tmp_path / "candles.csv"
    path.write_text(example)
    candles = Candles.from_csv(path)
    # Naive ISO times are UTC; the numbers arrive unchanged.
    expected_ms = [int(np.datetime64(r[0].replace(" ", "T"), "ms").astype(np.int64)) for r in rows]
    assert candles.start_ms.tolist() == expected_ms
    assert candles.close.tolist() == [float(r[4]) for r in rows]
    assert candles.volume.tolist() == [float(r[5]) for r in rows]


def test_csv_that_breaks_the_documented_rule_is_rejected(tmp_path):
    from convnext_fast.data.candles import Candles, InvalidCandlesError

    path = tmp_path / "bad.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2024-01-01 00:00:00,10,9,8,9.5,1\n")
    with pytest.raises(InvalidCandlesError, match="high < max"):
        Candles.from_csv(path)


def test_readme_test_command_is_what_setup_and_ci_run():
    tests_section = README[README.index("**The tests**") :]
    command = next(
        line for lang, body in FENCE.findall(tests_section) if lang == "bash" for line in body.splitlines()
    )
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "pytest"] and argv[-1] == "tests", command
    assert not {"-m", "-k", "-x", "--lf"} & set(argv[3:]), (
        f"the README's command must run every test: {command}"
    )
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert command in setup, "scripts/setup.sh test runs another command than the README's"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^[^#\n]*scripts/setup\.sh\"? test\b", ci, re.M), (
        ".ci/run no longer calls setup.sh test"
    )


BASH_COMMANDS = [argv for block in blocks("bash") for argv in commands(block)]
# Placeholders that stand for a folder shared between machines, which the reader supplies.
SHARED_FS = "/shared/"


def is_project_command(argv: list[str]) -> bool:
    return bool(argv) and (
        argv[0] in ("convnext-fast", "torchrun") or argv[:3] == ["python", "-m", "convnext_fast.live"]
    )


@pytest.mark.parametrize("flag", ["--out", "--store", "--state"])
def test_readme_commands_write_only_under_runs(flag):
    paths = [option(argv, flag) for argv in BASH_COMMANDS if is_project_command(argv)]
    outside = [p for p in paths if p is not None and not p.startswith(("runs/", SHARED_FS))]
    assert not outside, f"README commands write {flag} outside runs/: {outside}"


def test_readme_commands_that_default_to_the_current_folder_name_their_output():
    # `backtest` defaults to ./report and the live loop to ./live_state.db: in the README they must say where.
    for argv in BASH_COMMANDS:
        if argv[:2] == ["convnext-fast", "backtest"]:
            assert "--out" in argv, shlex.join(argv)
        if argv[:3] == ["python", "-m", "convnext_fast.live"]:
            assert "--state" in argv, shlex.join(argv)


def test_readme_commands_do_not_overwrite_each_others_output():
    seen: dict[str, str] = {}
    for argv in BASH_COMMANDS:
        if not is_project_command(argv) or "--resume" in argv:  # resuming is meant to reuse the folder
            continue
        out = option(argv, "--out")
        if argv[:2] == ["convnext-fast", "demo"] and out is None:
            out = "runs/demo"  # the demo's default
        if out is None:
            continue
        line = shlex.join(argv)
        assert out not in seen, f"two README commands write {out}:\n  {seen[out]}\n  {line}"
        seen[out] = line
