"""``convnext-fast tune``: Optuna studies shared by worker processes, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from convnext_fast.cli import main
from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.train.tune import open_storage

from .tiny_run import TINY_ARGS, write_candles_csv

optuna = pytest.importorskip("optuna")

RUN_ARGS = [*TINY_ARGS, "--epochs", "1", "--warmup-epochs", "1", "--folds", "2", "--horizon", "4",
            "--device", "cpu", "--num-threads", "1"]  # fmt: skip
SPACE = """
lr = {low = 1e-4, high = 3e-3, log = true}
weight_decay = {low = 1e-3, high = 0.2, log = true}
drop_path_rate = {low = 0.0, high = 0.2}
window = {choices = [64, 96]}
"label.threshold" = {low = 0.001, high = 0.008, log = true}
"""
PG_BIN = Path(os.environ.get("CONVNEXT_FAST_PG_BIN", "/usr/local/bin"))


@pytest.fixture
def market(tmp_path, rng):
    csv_path = tmp_path / "candles.csv"
    write_candles_csv(synthetic_candles(1800, seed=int(rng.integers(2**31))), csv_path)
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    return ["--data", str(csv_path), *RUN_ARGS, "--space", str(space)]


def run_workers(args: list[str], n_workers: int, n_trials: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "convnext_fast.cli", "tune", *args, "--n-trials", str(n_trials)]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(n_workers)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]


def check_every_trial_ran_once(study, out: Path, n_workers: int, n_trials: int) -> None:
    trials = study.get_trials(deepcopy=False)
    total = n_workers * n_trials
    assert sorted(t.number for t in trials) == list(range(total))
    states = Counter(t.state.name for t in trials)
    assert set(states) <= {"COMPLETE", "PRUNED"} and states["COMPLETE"] >= 2, states
    workers = Counter(t.user_attrs["worker"] for t in trials)
    assert sorted(workers.values()) == [n_trials] * n_workers, workers
    run_dirs = sorted(p.name for p in (out / "trials").iterdir())
    assert run_dirs == [f"trial_{t:04d}" for t in range(total)]
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        folds = sorted(k for k in t.user_attrs if k.startswith("fold_"))
        assert [d.name for d in sorted(run_dir.glob("fold_*"))] == folds, "each fold trained once"
        for fold in folds:  # one epoch per fold, logged once: no second worker ran it again
            assert len((run_dir / fold / "metrics.jsonl").read_text().splitlines()) == 1
        if t.state.name == "COMPLETE":
            assert folds == ["fold_0", "fold_1"]
            results = json.loads((run_dir / "results.json").read_text())["pooled"]
            assert t.value == pytest.approx(results["model"]["balanced_accuracy"])
            majority = results["baselines"]["majority_class"]["balanced_accuracy"]
            assert t.user_attrs["baselines"]["majority_class"] == pytest.approx(majority)
        else:
            assert folds == ["fold_0"] and not (run_dir / "results.json").exists()


def check_summary(out: Path, study, capsys) -> None:
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == list(range(len(study.trials)))
    assert printed.count("| COMPLETE |") + printed.count("| PRUNED |") == len(rows)
    best = json.loads((out / "best.json").read_text())
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    top = max(complete, key=lambda t: t.value)
    assert best["number"] == top.number and best["value"] == pytest.approx(top.value)
    assert best["train_config"]["lr"] == pytest.approx(top.params["lr"])
    assert (out / "best.safetensors").read_bytes() == Path(best["checkpoint"]).read_bytes()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_on_one_sqlite_study_finish_every_trial_exactly_once(tmp_path, market, capsys):
    out = tmp_path / "tune"
    args = [*market, "--out", str(out), "--study-name", "s"]
    run_workers(args, n_workers=2, n_trials=2)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{out / 'study.db'}")
    check_every_trial_ran_once(study, out, n_workers=2, n_trials=2)
    assert main(["tune", *args, "--n-trials", "0"]) == 0  # report only: the table of both workers' trials
    check_summary(out, study, capsys)


def _as_unprivileged(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser") or shutil.which("setpriv")
    if runuser is None:
        pytest.skip("initdb refuses to run as root and neither runuser nor setpriv is available")
    if runuser.endswith("runuser"):
        return [runuser, "-u", "nobody", "--", *cmd]
    return [runuser, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server in a temporary folder, reachable only through its unix socket there."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not (initdb.is_file() and pg_ctl.is_file()):
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (set CONVNEXT_FAST_PG_BIN)")
    pytest.importorskip("psycopg2")
    # Not under pytest's tmp_path: the server's user must reach it, and a socket path has a ~100-byte limit.
    root = Path(tempfile.mkdtemp(prefix="cfpg"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "nobody", "nogroup")
    data = root / "data"
    started = False
    try:
        subprocess.run(
            _as_unprivileged([str(initdb), "-D", str(data), "-U", "tune", "-A", "trust", "--no-sync"]),
            check=True, capture_output=True, timeout=120, cwd=root,
        )  # fmt: skip
        options = f"-k {root} -c listen_addresses='' -c fsync=off"
        subprocess.run(
            _as_unprivileged([str(pg_ctl), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
            check=True, capture_output=True, timeout=60, cwd=root,
        )  # fmt: skip
        started = True
        yield f"postgresql://tune@/postgres?host={root}"
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text()[-2000:] if (root / "log").is_file() else ""
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode()[-2000:]} {log}")
    finally:
        if started:
            subprocess.run(
                _as_unprivileged([str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True, timeout=60, cwd=root,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_on_a_postgresql_study_finish_every_trial_exactly_once(
    tmp_path, market, postgres_url, capsys
):
    out = tmp_path / "tune"
    args = [*market, "--out", str(out), "--storage", postgres_url, "--study-name", "pg"]
    run_workers(args, n_workers=2, n_trials=2)
    study = optuna.load_study(study_name="pg", storage=open_storage(postgres_url))
    check_every_trial_ran_once(study, out, n_workers=2, n_trials=2)
    assert not (out / "study.db").exists(), "the server holds the study, not a local SQLite file"
    assert main(["tune", *args, "--n-trials", "0"]) == 0
    check_summary(out, study, capsys)


@pytest.mark.slow
def test_backtest_metric_searches_the_decision_threshold(tmp_path, market, capsys):
    space = tmp_path / "space.json"
    space.write_text(
        json.dumps({"lr": {"low": 1e-4, "high": 1e-3, "log": True}, "threshold": {"low": 0.3, "high": 0.6}})
    )
    out = tmp_path / "tune"
    base = [*market[: market.index("--space")], "--out", str(out)]
    rc = main(
        ["tune", *base, "--space", str(space), "--metric", "sharpe", "--n-trials", "2", "--pruner", "none"]
    )
    assert rc == 0
    best = json.loads((out / "best.json").read_text())
    assert 0.3 <= best["params"]["threshold"] <= 0.6 and best["metric"] == "sharpe"
    assert isinstance(best["value"], float)
    assert "threshold" not in best["train_config"], "the decision threshold is no training setting"
    capsys.readouterr()


@pytest.mark.parametrize(
    ("space", "extra", "match"),
    [
        ({"colour": {"choices": [1]}}, [], "unknown parameter 'colour'"),
        ({"lr": {"low": 1e-2, "high": 1e-3}}, [], "low <= high"),
        ({"lr": {"choices": []}}, [], "non-empty list"),
        ({"model": {"choices": ["atto", "huge"]}}, [], "model = 'huge': 'huge' is neither a variant"),
        ({"window": {"low": 16, "high": 128}}, [], "window = 16: window must be >= 32"),
        ({"threshold": {"low": 0.3, "high": 0.6}}, [], "only a backtest --metric"),
        ({"lr": {"low": 1e-4, "high": 1e-3}}, ["--metric", "ic"], "--metric for classification"),
        ({"lr": {"low": 1e-4, "high": 1e-3}}, ["--fold", "1"], "drop --fold"),
        ({"lr": {"low": 1e-4, "high": 1e-3}}, ["--storage", "redis://x"], "--storage must be"),
    ],
)
def test_bad_search_settings_are_one_line_errors(tmp_path, market, capsys, space, extra, match):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(space))
    base = market[: market.index("--space")]
    rc = main(["tune", *base, "--space", str(path), "--out", str(tmp_path / "t"), *extra, "--n-trials", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "t" / "trials").exists(), "nothing was trained"


def test_missing_optuna_is_a_one_line_error(tmp_path, market, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    rc = main(["tune", *market, "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'convnext_fast[tune]'" in err and len(err.strip().splitlines()) == 1
