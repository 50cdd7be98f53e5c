"""One-file checkpoints: safetensors weights + JSON metadata (model config, feature spec, normalisation,
label spec, metrics), optionally the EMA weights, optimiser moments and loop state for resuming.

safetensors holds only tensors and strings, so loading a checkpoint never unpickles anything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .. import model as fused_model
from .. import reference
from ..errors import UserError
from .records import dumps

FORMAT = "convnext_fast.checkpoint"
VERSION = "1"
REQUIRED_META = ("model", "feature_spec", "normalisation")
_MODEL, _EMA, _OPTIM = "model.", "ema.", "optim."


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
    meta: dict,
    *,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    training_state: dict | None = None,
) -> Path:
    """Write ``model``'s weights and ``meta`` (plus ``model.config`` under ``meta["model"]``) to ``path``.

    ``ema`` (a torch ``AveragedModel``), ``optimizer`` and ``training_state`` (epoch, step, early-stopping
    state ...) make the file resumable. The write is atomic: a crash never leaves a half-written file."""
    path = Path(path)
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    meta = {**meta, "model": {**meta.get("model", {}), **module.config}}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"meta is missing {missing}; a checkpoint must say how its inputs were made")
    tensors = _tensors_with_prefix(_MODEL, module.state_dict())
    header = {"format": FORMAT, "version": VERSION, "meta": dumps(meta)}
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


def validate_meta(meta: dict, feature_spec=None, where: str = "checkpoint") -> None:
    """Check that the checkpoint's inputs can be rebuilt by this feature pipeline and fit the model:
    the feature spec parses, its channel count equals ``in_chans`` and the normalisation's length, and
    (when ``feature_spec`` is given, e.g. the live loop's) it is the very same spec."""
    from .inputs import FeatureSpec, LabelSpec

    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise UserError(f"{where}: metadata lacks {missing}")
    try:
        saved = FeatureSpec.from_dict(meta["feature_spec"])
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(
            f"{where}: its feature spec is not understood by this feature pipeline ({exc})"
        ) from None
    if meta["model"].get("task", "classification") == "classification" and meta.get("label_spec"):
        try:
            LabelSpec.from_dict(meta["label_spec"])
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"{where}: its label spec is not understood by this dataset module ({exc})"
            ) from None
    in_chans = meta["model"].get("in_chans")
    expected = saved.n_channels
    if meta.get("universe"):  # higher-timeframe copies of the features and one-hot symbol channels
        from .inputs import UniverseSpec

        try:
            universe = UniverseSpec.from_dict(meta["universe"])
        except (TypeError, ValueError, KeyError) as exc:
            raise UserError(f"{where}: its universe block is not understood ({exc})") from None
        expected = saved.n_channels * (1 + len(universe.htf)) + universe.extra_channels()
    if expected != in_chans:
        raise UserError(
            f"{where}: feature spec has {expected} channels but the model expects in_chans={in_chans}"
        )
    norm = meta["normalisation"]
    for key in ("mean", "std"):
        if len(norm.get(key, ())) != in_chans:
            raise UserError(
                f"{where}: normalisation {key!r} has {len(norm.get(key, ()))} entries, not in_chans={in_chans}"
            )
    if feature_spec is not None:
        wanted = feature_spec.to_dict() if hasattr(feature_spec, "to_dict") else dict(feature_spec)
        got = saved.to_dict()
        if json.loads(dumps(wanted)) != json.loads(dumps(got)):
            diff = sorted(k for k in set(wanted) | set(got) if wanted.get(k) != got.get(k))
            raise UserError(
                f"{where}: feature spec differs from the pipeline's in {diff}; retrain or use matching features"
            )


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
) -> tuple[reference.ConvNeXt1d, dict]:
    """Rebuild the model (fused by default, else the reference) in eval mode and return ``(model, meta)``.

    ``use_ema`` loads the EMA weights when the file has them. Raises :class:`UserError` when the file is
    not a checkpoint or its config does not match the feature pipeline (or ``feature_spec``). A model
    trained on a universe (``meta["universe"]``: per-symbol rolling normalisation, maybe higher-timeframe and
    symbol channels) loads only for callers that build its inputs (``allow_universe``): anyone else would
    feed it the wrong inputs without an error."""
    tensors, header = read_checkpoint(path)
    meta = json.loads(header["meta"])
    validate_meta(meta, feature_spec, where=f"checkpoint {str(path)!r}")
    if meta.get("universe") and not allow_universe:
        raise UserError(
            f"checkpoint {str(path)!r} was trained on a universe ({', '.join(meta['universe']['symbols'])}): "
            "its inputs are built per symbol, which this command does not do yet (backtest --symbols does)"
        )
    config = {k: v for k, v in meta["model"].items() if k != "variant"}
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


def restore_training_state(
    path: str | Path,
    model: nn.Module,
    *,
    ema: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[dict, dict]:
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
    return json.loads(header["meta"]), json.loads(header.get("training_state", "{}"))
