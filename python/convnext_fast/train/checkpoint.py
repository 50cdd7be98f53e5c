"""One-file checkpoints: safetensors weights + JSON metadata (model config, feature spec, normalisation,
label spec, metrics), optionally the EMA weights, optimiser moments and loop state for resuming.

safetensors holds only tensors and strings, so loading a checkpoint never unpickles anything."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .. import model as fused_model
from .. import reference
from ..errors import UserError
from .normalisation import Normalisation
from .records import dumps

FORMAT = "convnext_fast.checkpoint"
VERSION = "1"
REQUIRED_META = ("model", "feature_spec", "normalisation")
RANGE_NAMES = ("train", "val", "test")
_MODEL, _EMA, _OPTIM = "model.", "ema.", "optim."


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _positive_numbers(value) -> bool:
    return isinstance(value, (list, tuple)) and all(
        _is_number(v) and math.isfinite(v) and v > 0 for v in value
    )


def _check(ok: bool, key: str, wanted: str, value) -> None:
    if not ok:
        raise UserError(f"{key!r} must be {wanted}, got {value!r}")


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything a checkpoint says besides its weights: how its inputs are made (``feature_spec``,
    ``normalisation``, ``window``, ``universe``), what it predicts (``task``, ``label_spec``, ``target_scale``,
    :attr:`horizons`), what it was fitted and tested on (``ranges``: ISO ``[first, last]`` bar of
    ``train``/``val``/``test``; ``train_config``; ``fold``) and how it scored (``metrics``). ``threshold`` is
    the decision threshold τ chosen on the validation fold (None in checkpoints written before it existed).

    The only reader and writer of the metadata: :meth:`from_dict` checks a stored dict (types, required keys,
    task, channel counts) and :meth:`to_dict` writes the same JSON the trainer always wrote, so older files
    load. Treat the mappings inside as read-only; :meth:`replace` makes a changed copy."""

    model: Mapping[str, Any]
    feature_spec: Any  # a convnext_fast.features.pipeline.FeatureSpec
    normalisation: Normalisation | None
    task: str = "classification"
    window: int | None = None
    label_spec: Mapping[str, Any] | None = None
    target_scale: tuple[float, ...] | None = None
    variant: str | None = None
    fold: int | None = None
    ranges: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    train_config: Mapping[str, Any] = field(default_factory=dict)
    universe: Any = None  # a convnext_fast.data.universe.UniverseSpec
    metrics: Mapping[str, Any] = field(default_factory=dict)
    threshold: float | None = None

    def __post_init__(self):
        from ..data.dataset import MIN_WINDOW
        from ..data.universe import UniverseSpec
        from ..features.pipeline import FeatureSpec
        from ..reference import TASKS

        def optional(test):
            return lambda v: v is None or test(v)

        # (field, test, what it must be): one line each, so every refusal names its key the same way
        fields_ = (
            ("model", lambda v: isinstance(v, Mapping), "a mapping (the model config)"),
            ("feature_spec", lambda v: isinstance(v, FeatureSpec), "a FeatureSpec"),
            ("normalisation", optional(lambda v: isinstance(v, Normalisation)), "a Normalisation"),
            ("window", optional(lambda v: _is_int(v) and v >= MIN_WINDOW), f"an int >= {MIN_WINDOW}"),
            ("label_spec", optional(lambda v: isinstance(v, Mapping)), "a mapping"),
            ("target_scale", optional(_positive_numbers), "a list of finite numbers > 0"),
            ("variant", optional(lambda v: isinstance(v, str)), "a string"),
            ("fold", optional(lambda v: _is_int(v) and v >= 0), "an int >= 0"),
            ("ranges", lambda v: isinstance(v, Mapping), "a mapping"),
            ("train_config", lambda v: isinstance(v, Mapping), "a mapping"),
            ("universe", optional(lambda v: isinstance(v, UniverseSpec)), "a UniverseSpec"),
            ("metrics", lambda v: isinstance(v, Mapping), "a mapping"),
            (
                "threshold",
                optional(lambda v: _is_number(v) and math.isfinite(v)),
                "a finite number or absent",
            ),
        )
        for key, test, wanted in fields_:
            _check(test(getattr(self, key)), key, wanted, getattr(self, key))
        if self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r} (known: {', '.join(TASKS)})")
        if self.model.get("task", self.task) != self.task:
            raise UserError(f"metadata says task {self.task!r} but the model is {self.model['task']!r}")
        in_chans = self.model.get("in_chans")
        _check(
            in_chans is None or (_is_int(in_chans) and in_chans >= 1),
            "model.in_chans",
            "an int >= 1",
            in_chans,
        )
        if self.target_scale is not None:
            object.__setattr__(self, "target_scale", tuple(float(v) for v in self.target_scale))
        for name, span in self.ranges.items():
            if name not in RANGE_NAMES:
                raise UserError(f"'ranges' has unknown range {name!r} (known: {', '.join(RANGE_NAMES)})")
            ok = isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(t, str) for t in span)
            _check(ok, f"ranges.{name}", "[first, last] time strings", span)
        object.__setattr__(self, "ranges", {name: tuple(span) for name, span in self.ranges.items()})
        if self.threshold is not None:
            # τ is a probability for a classifier, a forward return (never negative) for regression
            top = 1.0 if self.task == "classification" else math.inf
            _check(
                0.0 <= self.threshold <= top, "threshold", f"in [0, {top:g}] for {self.task}", self.threshold
            )
            object.__setattr__(self, "threshold", float(self.threshold))
        self._check_channels()

    def _check_channels(self) -> None:
        """The inputs the spec makes must fit the model: feature channels (times a universe's timeframes,
        plus its symbol channels) = ``in_chans`` = the normalisation's length."""
        if self.task == "classification" and self.label_spec:
            from ..data.labels import LabelSpec

            try:
                LabelSpec.from_dict(dict(self.label_spec))
            except (TypeError, ValueError) as exc:
                raise UserError(f"its label spec is not understood by this dataset module ({exc})") from None
        in_chans = self.model.get("in_chans")
        if in_chans is None:
            return
        expected = self.feature_spec.n_channels
        if self.universe is not None:  # higher-timeframe copies of the features and one-hot symbol channels
            expected = expected * (1 + len(self.universe.htf)) + self.universe.extra_channels()
        if expected != in_chans:
            raise UserError(f"feature spec has {expected} channels but the model expects in_chans={in_chans}")
        if self.normalisation is not None and self.normalisation.n_channels != in_chans:
            raise UserError(
                f"normalisation has {self.normalisation.n_channels} entries, not in_chans={in_chans}"
            )

    # --------------------------------------------------------------------------------- stored form
    @classmethod
    def from_dict(cls, data: Mapping, where: str = "checkpoint") -> CheckpointMeta:
        """The metadata of a stored dict, or :class:`UserError` naming ``where`` and the key at fault."""
        if not isinstance(data, Mapping):
            raise UserError(f"{where}: metadata must be a mapping, got {type(data).__name__}")
        missing = [k for k in REQUIRED_META if k not in data]
        if missing:
            raise UserError(f"{where}: metadata lacks {missing}")
        from ..data.arg_checks import check_config_keys
        from ..data.universe import UniverseSpec
        from ..features.pipeline import FeatureSpec

        kwargs = check_config_keys(
            f"{where}: metadata", dict(data), {f.name for f in dataclasses.fields(cls)}
        )
        try:
            if not isinstance(kwargs["model"], Mapping):
                raise UserError(f"'model' must be a mapping (the model config), got {kwargs['model']!r}")
            try:
                kwargs["feature_spec"] = FeatureSpec.from_dict(dict(kwargs["feature_spec"]))
            except (TypeError, ValueError, KeyError) as exc:
                raise UserError(
                    f"its feature spec is not understood by this feature pipeline ({exc})"
                ) from None
            norm = kwargs["normalisation"]
            kwargs["normalisation"] = Normalisation.from_dict(norm)
            if kwargs.get("universe"):
                try:
                    kwargs["universe"] = UniverseSpec.from_dict(dict(kwargs["universe"]))
                except (TypeError, ValueError, KeyError) as exc:
                    raise UserError(f"its universe block is not understood ({exc})") from None
            else:
                kwargs["universe"] = None
            # Older files name the task only in the model config; newer ones in both places.
            kwargs.setdefault("task", kwargs["model"].get("task", "classification"))
            for key in ("ranges", "train_config", "metrics"):
                if kwargs.get(key) is None:
                    kwargs.pop(key, None)
            return cls(**kwargs)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None

    def to_dict(self) -> dict:
        """The stored form (plain JSON types); None fields are left out, as older writers did."""
        out = {
            "variant": self.variant,
            "model": dict(self.model),
            "task": self.task,
            "window": self.window,
            "feature_spec": self.feature_spec.to_dict(),
            "label_spec": None if self.label_spec is None else dict(self.label_spec),
            "normalisation": None if self.normalisation is None else self.normalisation.to_dict(),
            "target_scale": None if self.target_scale is None else list(self.target_scale),
            "fold": self.fold,
            "ranges": {name: list(span) for name, span in self.ranges.items()},
            "train_config": dict(self.train_config),
            "universe": None if self.universe is None else self.universe.to_dict(),
            "metrics": dict(self.metrics),
            "threshold": self.threshold,
        }
        return json.loads(dumps({k: v for k, v in out.items() if v is not None}))

    def replace(self, **changes) -> CheckpointMeta:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def untrained(cls, model_config: Mapping, feature_spec, window: int | None = None) -> CheckpointMeta:
        """Metadata for a model that never saw data (plumbing and latency runs): features go in raw."""
        return cls(
            model=dict(model_config),
            feature_spec=feature_spec,
            normalisation=None,
            task=model_config.get("task", "classification"),
            window=window,
        )

    # --------------------------------------------------------------------------------- derived facts
    @property
    def in_chans(self) -> int | None:
        return self.model.get("in_chans")

    @property
    def n_outputs(self) -> int:
        """Raw outputs per window: class logits (classification) or one value per horizon (regression)."""
        if self.task == "classification":
            return int(self.model.get("num_classes", 3))
        return int(self.model.get("num_outputs", 1))

    @property
    def horizons(self) -> tuple[int, ...]:
        """Bars ahead the targets look: the label horizon (classification) or every regression horizon."""
        spec = self.label_spec or {}
        if "horizons" in spec:
            return tuple(int(h) for h in spec["horizons"])
        if "horizon" in spec:
            return (int(spec["horizon"]),)
        if self.task == "regression":
            return tuple(int(h) for h in self.train_config.get("horizons", ()))
        return ()

    @property
    def interval(self) -> str:
        """The kline interval the model was trained on (the trainer's default when not recorded)."""
        return str(self.train_config.get("interval", "60"))

    def window_length(self, override: int | None = None) -> int:
        """The window T to feed the model: ``override`` (``--window``), else the trained one."""
        from ..data.dataset import window_of

        return window_of(self.window or self.train_config.get("window"), override)

    @property
    def out_of_sample_start(self) -> str | None:
        """First bar of the test range (UTC, as written), or None when the file does not say."""
        test = self.ranges.get("test")
        return test[0] if test else None

    @property
    def fitted_range_ends(self) -> dict[str, str]:
        """Last bar of each range the weights were fitted or selected on (``train``, ``val``)."""
        return {name: span[-1] for name, span in self.ranges.items() if name in ("train", "val")}

    def check_pipeline(self, feature_spec, where: str = "checkpoint") -> None:
        """:class:`UserError` unless ``feature_spec`` (the caller's pipeline) is the very spec trained on."""
        wanted = feature_spec.to_dict() if hasattr(feature_spec, "to_dict") else dict(feature_spec)
        got = self.feature_spec.to_dict()
        if json.loads(dumps(wanted)) != json.loads(dumps(got)):
            diff = sorted(k for k in set(wanted) | set(got) if wanted.get(k) != got.get(k))
            raise UserError(
                f"{where}: feature spec differs from the pipeline's in {diff}; retrain or use matching features"
            )


def _tensors_with_prefix(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous() for k, v in state.items()}


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimiser state split into tensors (moments, step counts) and JSON (hyper-parameters, scalars)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: CheckpointMeta | Mapping,
    *,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    training_state: dict | None = None,
) -> Path:
    """Write ``model``'s weights and ``meta`` (with ``model.config`` as its model config) to ``path``.

    ``meta`` is a :class:`CheckpointMeta` or its stored dict (checked by :meth:`CheckpointMeta.from_dict`).
    ``ema`` (a torch ``AveragedModel``), ``optimizer`` and ``training_state`` (epoch, step, early-stopping
    state ...) make the file resumable. The write is atomic: a crash never leaves a half-written file."""
    path = Path(path)
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    if not isinstance(meta, CheckpointMeta):
        meta = CheckpointMeta.from_dict(
            {**meta, "model": {**meta.get("model", {}), **module.config}}, where="save_checkpoint"
        )
    meta = meta.replace(model={**meta.model, **module.config})
    if meta.normalisation is None:
        raise UserError(
            "save_checkpoint: meta has no normalisation; a checkpoint must say how its inputs were made"
        )
    tensors = _tensors_with_prefix(_MODEL, module.state_dict())
    header = {"format": FORMAT, "version": VERSION, "meta": dumps(meta.to_dict())}
    if ema is not None:
        tensors.update(_tensors_with_prefix(_EMA, ema.state_dict()))
    if optimizer is not None:
        optim_tensors, optim_json = _optimizer_tensors(optimizer)
        tensors.update(optim_tensors)
        header["optimizer"] = dumps(optim_json)
    if training_state is not None:
        header["training_state"] = dumps(training_state)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Raw tensors and header of a checkpoint file, with clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"checkpoint {str(path)!r} is not a safetensors file ({exc})") from None
    if header.get("format") != FORMAT:
        raise UserError(
            f"checkpoint {str(path)!r} is not a convnext_fast checkpoint (format={header.get('format')!r})"
        )
    if header.get("version") != VERSION:
        raise UserError(
            f"checkpoint {str(path)!r} has version {header.get('version')!r}; this build reads {VERSION!r}"
        )
    return tensors, header


def _strip(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def validate_meta(meta: Mapping, feature_spec=None, where: str = "checkpoint") -> CheckpointMeta:
    """:meth:`CheckpointMeta.from_dict` plus, when ``feature_spec`` is given (e.g. the live loop's), the check
    that it is the very spec the checkpoint was trained on."""
    checked = CheckpointMeta.from_dict(meta, where=where)
    if feature_spec is not None:
        checked.check_pipeline(feature_spec, where)
    return checked


def build_model(config: dict, fused: bool = True, backend: str = "auto") -> reference.ConvNeXt1d:
    if fused:
        return fused_model.ConvNeXt1d(**config, backend=backend)
    return reference.ConvNeXt1d(**config)


def load_checkpoint(
    path: str | Path,
    fused: bool = True,
    *,
    feature_spec=None,
    use_ema: bool = False,
    backend: str = "auto",
    device: str | torch.device = "cpu",
    allow_universe: bool = False,
) -> tuple[reference.ConvNeXt1d, CheckpointMeta]:
    """Rebuild the model (fused by default, else the reference) in eval mode and return ``(model, meta)``.

    ``use_ema`` loads the EMA weights when the file has them. Raises :class:`UserError` when the file is
    not a checkpoint or its config does not match the feature pipeline (or ``feature_spec``). A model
    trained on a universe (``meta.universe``: per-symbol rolling normalisation, maybe higher-timeframe and
    symbol channels) loads only for callers that build its inputs (``allow_universe``): anyone else would
    feed it the wrong inputs without an error."""
    tensors, header = read_checkpoint(path)
    meta = _header_meta(header, path, feature_spec)
    if meta.universe is not None and not allow_universe:
        raise UserError(
            f"checkpoint {str(path)!r} was trained on a universe ({', '.join(meta.universe.symbols)}): "
            "its inputs are built per symbol, which this command does not do yet (backtest --symbols does)"
        )
    config = {k: v for k, v in meta.model.items() if k != "variant"}
    try:
        model = build_model(config, fused=fused, backend=backend)
    except (TypeError, ValueError) as exc:
        raise UserError(f"checkpoint {str(path)!r}: model config {config} is invalid ({exc})") from None
    weights = _strip(_MODEL, tensors)
    if use_ema:
        ema = _strip(_EMA + "module.", tensors)
        if not ema:
            raise UserError(f"checkpoint {str(path)!r} has no EMA weights (train with --ema)")
        weights = ema
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {str(path)!r}: weights do not fit the model config ({exc})") from None
    return model.to(device).eval(), meta


def _header_meta(header: dict[str, str], path, feature_spec=None) -> CheckpointMeta:
    where = f"checkpoint {str(path)!r}"
    try:
        stored = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"{where}: its metadata is not readable JSON ({exc})") from None
    return validate_meta(stored, feature_spec, where=where)


def restore_training_state(
    path: str | Path,
    model: nn.Module,
    *,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[CheckpointMeta, dict]:
    """Load weights, EMA and optimiser state into existing objects; return ``(meta, training_state)``."""
    tensors, header = read_checkpoint(path)
    module = getattr(model, "module", model)
    module.load_state_dict(_strip(_MODEL, tensors), strict=True)
    if ema is not None:
        ema_state = _strip(_EMA, tensors)
        if not ema_state:
            raise UserError(f"checkpoint {str(path)!r} has no EMA weights to resume")
        ema.load_state_dict(ema_state, strict=True)
    if optimizer is not None:
        if "optimizer" not in header:
            raise UserError(f"checkpoint {str(path)!r} has no optimiser state to resume from")
        saved = json.loads(header["optimizer"])
        state: dict[int, dict] = {}
        for key, value in _strip(_OPTIM, tensors).items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        for idx, scalars in saved["scalars"].items():
            state.setdefault(int(idx), {}).update(scalars)
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    return _header_meta(header, path), json.loads(header.get("training_state", "{}"))
