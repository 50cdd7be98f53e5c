"""``convnext-fast tune``: hyperparameter search over walk-forward training, on Optuna.

Each trial trains every walk-forward fold one at a time (the trainer's ``fold=K``), reports the pooled
out-of-sample metric over the folds finished so far after each fold, and is pruned early when that lags the
other trials at the same fold (Optuna's median pruner). The study lives in a database: an embedded SQLite
file by default (``--storage sqlite:///...``; several processes on one machine may share it) or a server
(``postgresql://user@host/db``), which lets workers on many machines run trials of one study: start the
same command on each. ``--n-trials`` counts this process's trials (Optuna's meaning), so a study's total
is the sum over its workers.

Out folder (``--out``)::

    study.db                  the default SQLite study
    trials/trial_NNNN/        each trial's walk-forward run (fold_K/best.safetensors, results.json...)
    trials.csv                one row per trial of the study (every worker's), also printed
    best.json                 the best trial: its parameters, score, full TrainConfig and checkpoint
    best.safetensors          the best trial's newest-fold checkpoint (when that trial ran here)

The search space is a TOML or JSON table (``--space``) keyed by what it changes:

- a TrainConfig field (``lr``, ``weight_decay``, ``drop_path_rate``, ``window``, ``batch_size``...);
- ``label.<field>`` for the label spec (``label.threshold``, ``label.horizon``, ``label.kind``, ``label.k``);
- ``model``: a variant name (``atto``) or ``dims:depths`` (``"8,16,32,64:1,1,1,1"``);
- ``threshold``: the trading decision threshold, which only the backtest metrics use.

Each value is ``{low = .., high = .., log = true|false, step = ..}`` (integers when both bounds are) or
``{choices = [..]}``. Without ``--space`` a default space is searched (see :func:`default_space`).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import math
import os
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..variants import VARIANTS
from . import inputs
from .records import to_jsonable, write_json
from .trainer import TrainConfig, train

# Pooled metrics the search may optimise, and which way is better.
EVAL_METRICS = {
    "classification": {
        "balanced_accuracy": "maximize",
        "macro_f1": "maximize",
        "accuracy": "maximize",
        "direction_accuracy": "maximize",
        "log_loss": "minimize",
    },
    "regression": {
        "ic": "maximize",
        "rank_ic": "maximize",
        "direction_accuracy": "maximize",
        "mse": "minimize",
    },
}
# Backtests of the pooled out-of-sample signals (default costs of trading.BacktestConfig).
BACKTEST_METRICS = {"sharpe": "maximize", "total_return": "maximize", "calmar": "maximize"}
DEFAULT_METRIC = {"classification": "balanced_accuracy", "regression": "ic"}
DEFAULT_DECISION_THRESHOLD = {"classification": 0.5, "regression": 0.0}  # the backtest command's default
_NOT_SEARCHABLE = {"data", "out", "symbol", "interval", "category", "device", "resume", "progress",
                   "tensorboard", "fold", "num_threads", "dims", "depths", "variant", "label"}  # fmt: skip


def _optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("convnext-fast tune needs Optuna: pip install 'convnext_fast[tune]'") from None
    return optuna


def default_space(base: TrainConfig) -> dict:
    """A sensible space around the base config: optimiser, regularisation, window, model size, labels."""
    space = {
        "lr": {"low": 1e-4, "high": 3e-3, "log": True},
        "weight_decay": {"low": 1e-3, "high": 0.2, "log": True},
        "drop_path_rate": {"low": 0.0, "high": 0.3},
        "window": {"choices": sorted({base.window, 2 * base.window, max(32, base.window // 2)})},
    }
    if base.dims is None:
        space["model"] = {"choices": ["atto", "femto", "pico"]}
    label = base.label_spec()
    if label is not None:
        space["label.horizon"] = {
            "choices": sorted({label.horizon, max(1, label.horizon // 2), 2 * label.horizon})
        }
        if label.kind == "fixed":
            space["label.threshold"] = {"low": label.threshold / 4, "high": label.threshold * 2, "log": True}
        else:
            space["label.k"] = {"low": 0.5, "high": 2.0}
    return space


def read_space(path: str) -> dict:
    text = Path(path)
    if not text.is_file():
        raise UserError(f"--space {path!r}: no such file")
    try:
        if text.suffix == ".json":
            return json.loads(text.read_text())
        import tomllib

        return tomllib.loads(text.read_text())
    except (ValueError, ImportError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise UserError(
            f"--space {path!r} is not valid {'JSON' if text.suffix == '.json' else 'TOML'}: {exc}"
        ) from None


def check_space(space: dict) -> dict:
    """Reject unknown keys and malformed ranges up front (one line each), not in the middle of a trial."""
    if not isinstance(space, dict) or not space:
        raise UserError("the search space must be a non-empty table of parameters")
    train_fields = {f.name for f in fields(TrainConfig)} - _NOT_SEARCHABLE
    label_fields = {f.name for f in fields(inputs.LabelSpec)}
    for key, spec in space.items():
        ok = key in train_fields or key in ("model", "threshold")
        ok = ok or (key.startswith("label.") and key[len("label.") :] in label_fields)
        if not ok:
            raise UserError(
                f"search space: unknown parameter {key!r}; use model, threshold, label.<field> or one of "
                f"{sorted(train_fields)}"
            )
        if not isinstance(spec, dict) or not (set(spec) == {"choices"} or {"low", "high"} <= set(spec)):
            raise UserError(f"search space: {key} must be {{choices = [...]}} or {{low = .., high = ..}}")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise UserError(f"search space: {key}.choices must be a non-empty list")
            continue
        extra = set(spec) - {"low", "high", "log", "step"}
        if extra:
            raise UserError(f"search space: {key} has unknown fields {sorted(extra)}")
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
            raise UserError(f"search space: {key}.low and .high must be numbers")
        if not low <= high or (spec.get("log") and low <= 0):
            raise UserError(
                f"search space: {key} needs low <= high (and low > 0 with log), got {low}..{high}"
            )
    return space


def _suggest(trial, key: str, spec: dict):
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(key, low, high, step=int(spec.get("step", 1)), log=log)
    return trial.suggest_float(key, float(low), float(high), step=spec.get("step"), log=log)


def _model_shape(value: str) -> dict:
    if value in VARIANTS:
        return {"variant": value, "dims": None, "depths": None}
    try:
        dims, depths = (tuple(int(v) for v in part.split(",")) for part in str(value).split(":"))
    except ValueError:
        raise UserError(f"{value!r} is neither a variant nor 'dims:depths'") from None
    return {"dims": dims, "depths": depths}


def trial_config(base: TrainConfig, params: dict, out: Path) -> TrainConfig:
    """The base config with a trial's parameters applied (``threshold`` is not a training setting)."""
    changes: dict = {"out": str(out), "fold": None, "resume": False}
    label = dict(base.label)
    for key, value in params.items():
        if key == "threshold":
            continue
        if key == "model":
            changes.update(_model_shape(value))
        elif key.startswith("label."):
            label[key[len("label.") :]] = value
        else:
            changes[key] = value
    return replace(base, **changes, label=label)


@dataclass
class Objective:
    base: TrainConfig
    candles: object
    space: dict
    metric: str
    out: Path

    def __call__(self, trial) -> float:
        optuna = _optuna()
        params = {key: _suggest(trial, key, spec) for key, spec in self.space.items()}
        run_dir = self.out / "trials" / f"trial_{trial.number:04d}"
        config = trial_config(self.base, params, run_dir)
        threshold = params.get("threshold", DEFAULT_DECISION_THRESHOLD[config.task])
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("run_dir", str(run_dir))
        n_folds = 1 if config.test_start is not None else config.folds
        value = math.nan
        for k in range(n_folds):
            result = train(replace(config, fold=k), candles=self.candles)
            value = self.score(config, result, threshold)
            trial.set_user_attr(f"fold_{k}", value)  # the pooled score over folds 0..k
            trial.report(value, k)
            if k + 1 < n_folds and trial.should_prune():
                raise optuna.TrialPruned(f"pooled {self.metric} {value:.4g} after fold {k}")
        if self.metric not in BACKTEST_METRICS:  # the naive predictors on the same bars, to read it against
            baselines = {n: m.get(self.metric) for n, m in result.pooled["baselines"].items()}
            trial.set_user_attr("baselines", to_jsonable(baselines))
        trial.set_user_attr("train_config", config.to_dict())
        trial.set_user_attr("checkpoint", str(run_dir / f"fold_{n_folds - 1}" / "best.safetensors"))
        return value

    def score(self, config: TrainConfig, result, threshold: float) -> float:
        if self.metric not in BACKTEST_METRICS:
            value = result.pooled["model"].get(self.metric)
            return math.nan if value is None else float(value)
        return backtest_score(config, self.candles, result.run_dir, result.folds, threshold, self.metric)


def backtest_score(
    config: TrainConfig, candles, run_dir: Path, folds: list[dict], threshold, metric
) -> float:
    """Backtest the pooled out-of-sample signals (default costs of ``BacktestConfig``, no funding) over the
    bars the tested folds span. Between strided decisions (``stride`` > 1) the last decision holds, as it
    would for a model run every ``stride`` bars."""
    from ..trading.backtest import run_backtest
    from ..trading.decision import DecisionPolicy
    from ..trading.report import periods_per_year_from

    parts = [np.load(Path(run_dir) / f"fold_{f['fold']}" / "predictions.npz") for f in folds]
    end_idx = np.concatenate([p["end_idx"] for p in parts])
    outputs = np.concatenate([p["outputs"] for p in parts])
    order = np.argsort(end_idx, kind="stable")
    end_idx, outputs = end_idx[order], outputs[order]
    # The saved predictions are what the trainer scored: probabilities, or returns already multiplied by
    # target_scale (hence a policy scale of 1). The one decision path turns either into signals.
    policy = DecisionPolicy(config.task, outputs.shape[1], threshold)
    decided = policy.batch_probs(outputs) if policy.classification else policy.batch(outputs)[0]
    first, last = int(end_idx[0]), int(end_idx[-1])
    hold = np.searchsorted(end_idx, np.arange(first, last + 1), side="right") - 1
    bars = slice(first, last + 1)
    result = run_backtest(
        candles.open[bars], candles.high[bars], candles.low[bars], candles.close[bars], decided[hold]
    )
    metrics = result.metrics(periods_per_year_from(candles.start_ms[bars]))
    # A threshold no signal clears never trades: no edge, scored 0 rather than the undefined 0/0 Sharpe
    # (which would fail the trial and teach the sampler nothing).
    return 0.0 if metrics.total_trades == 0 else float(getattr(metrics, metric))


def open_storage(url: str):
    """An Optuna storage for ``url`` (the driver named, the schema race handled, errors in one line)."""
    optuna = _optuna()
    import sqlalchemy.engine
    import sqlalchemy.exc

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # Several processes share the file: wait for the writer's lock instead of failing at once.
        kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        kwargs = {"pool_pre_ping": True}
        if url.startswith("postgresql://"):
            # SQLAlchemy's default driver differs between versions (psycopg2, then psycopg 3): name the
            # one that is installed.
            driver = next((d for d in ("psycopg", "psycopg2") if importlib.util.find_spec(d)), None)
            if driver is None:
                raise UserError("--storage postgresql:// needs a driver: pip install psycopg2-binary")
            url = f"postgresql+{driver}://" + url[len("postgresql://") :]
    else:
        raise UserError(f"--storage must be sqlite:///FILE or postgresql://..., got {url!r}")
    # Workers that start together race to create the schema; the loser retries once it exists.
    for attempt in range(5):
        try:
            # The heartbeat lets any worker mark the trials of a worker that died (killed, machine lost)
            # as failed, instead of leaving them RUNNING for ever. (Optuna calls it experimental.)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=60, grace_period=300
                )
        except sqlalchemy.exc.SQLAlchemyError as exc:  # a lost race, or a server that is not there
            if attempt == 4:
                first = str(exc).splitlines()[0]
                shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
                raise UserError(f"--storage {shown}: {type(exc).__name__}: {first}") from None
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def trials_rows(study) -> list[dict]:
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        duration = t.duration.total_seconds() if t.duration is not None else None
        folds = {k: v for k, v in t.user_attrs.items() if k.startswith("fold_")}
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "duration_s": duration,
                **{f"param.{k}": v for k, v in t.params.items()},
                **{f"pooled.{k}": v for k, v in sorted(folds.items())},
                **{f"baseline.{k}": v for k, v in t.user_attrs.get("baselines", {}).items()},
                "worker": t.user_attrs.get("worker"),
            }
        )
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    return "–" if value is None else str(value)


def trials_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(study, out: Path, metric: str) -> str:
    """trials.csv, best.json and best.safetensors from the study as it stands (every worker's trials)."""
    rows = trials_rows(study)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    tmp = out / f".trials.csv.{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{k: _csv_value(row.get(k)) for k in columns} for row in rows])
    tmp.replace(out / "trials.csv")  # atomic: two workers finishing together never interleave lines
    text = trials_table(rows) if rows else "(no trials yet)"
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        checkpoint = Path(best.user_attrs["checkpoint"])
        summary = {
            "study": study.study_name,
            "metric": metric,
            "direction": study.direction.name.lower(),
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "pooled_per_fold": {k: v for k, v in best.user_attrs.items() if k.startswith("fold_")},
            "baselines": best.user_attrs.get("baselines"),
            "train_config": best.user_attrs["train_config"],
            "checkpoint": str(checkpoint),
            "worker": best.user_attrs.get("worker"),
        }
        if checkpoint.is_file():  # a trial of another machine may have left its files there
            shutil.copyfile(checkpoint, out / "best.safetensors")
            summary["copied_to"] = str(out / "best.safetensors")
        write_json(out / "best.json", to_jsonable(summary))
        text += f"\n\nbest: trial {best.number}, {metric} = {_cell(best.value)}, params {best.params}"
    return text


def _csv_value(value):
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def run(args: argparse.Namespace) -> int:
    from .cli import config_from_args

    optuna = _optuna()
    if args.fold is not None or args.resume:
        raise UserError("tune trains every fold of each trial itself; drop --fold/--resume (a study resumes)")
    if args.n_trials < 0 or (args.timeout is not None and args.timeout <= 0):
        raise UserError("--n-trials must be >= 0 and --timeout > 0")
    base = config_from_args(args)
    metric = args.metric or DEFAULT_METRIC[base.task]
    metrics = {**EVAL_METRICS[base.task], **BACKTEST_METRICS}
    if metric not in metrics:
        raise UserError(f"--metric for {base.task} must be one of {sorted(metrics)}, got {metric!r}")
    space = check_space(read_space(args.space) if args.space else default_space(base))
    if "threshold" in space and metric not in BACKTEST_METRICS:
        raise UserError(f"the space searches threshold, which only a backtest --metric uses, not {metric}")
    for key in space:
        if key.startswith("label.") and base.task != "classification":
            raise UserError(f"search space: {key} applies to classification only")
    # A bad value fails here, once, rather than in every trial: each choice, and both ends of each range.
    for key, spec in space.items():
        for value in spec.get("choices", [spec.get("low"), spec.get("high")]):
            try:
                trial_config(base, {key: value}, Path(args.out))
            except UserError as exc:
                raise UserError(f"search space: {key} = {value!r}: {exc}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = open_storage(args.storage or f"sqlite:///{out.resolve() / 'study.db'}")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if args.pruner == "median" else None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=args.study_name,
        direction=metrics[metric],
        sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
        pruner=pruner or optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    saved = study.user_attrs.get("metric")
    if saved is None:
        study.set_user_attr("metric", metric)
    elif saved != metric:
        raise UserError(
            f"study {args.study_name!r} optimises {saved}, not {metric}; pick another --study-name"
        )
    if args.n_trials:
        candles = inputs.load_candles(base.data, base.symbol, base.interval, base.category)
        objective = Objective(base, candles, space, metric, out)
        start = time.perf_counter()
        study.optimize(
            objective, n_trials=args.n_trials, timeout=args.timeout, catch=(UserError, FloatingPointError)
        )
        print(f"this worker's trials took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    print(write_summary(study, out, metric))
    return 0
