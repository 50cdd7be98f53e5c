"""The fused drop-in ConvNeXt-1D: same constructor, ``state_dict`` and outputs as
:class:`convnext_fast.reference.ConvNeXt1d`, with every block running the two fused ops of
:mod:`convnext_fast.ops` channels-last (one transpose at the stem, none per block)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops, reference
from .backends import backends, check_backend_name, choose_backend
from .variants import variant_config


def drop_path_scale(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor | None:
    """Per-sample factor for the residual branch: 0 (dropped) or 1/keep, or None when drop path is off."""
    if rate == 0.0 or not training:
        return None
    keep = 1.0 - rate
    return x.new_empty(x.shape[0]).bernoulli_(keep) / keep


def patchify(h: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """``conv`` (kernel size = stride, no padding: the stem and the downsamples) on channels-last ``h``
    ``[B, T, C]``, as one linear over the non-overlapping windows of k steps, which are a view of ``h``:
    ``[B, T/k, k·C]``. Gives ``[B, T/k, C_out]`` channels-last with no transposes around a conv: the atto
    B=32 training step ran 70.3 / 69.7 ms against 74.1 / 73.2 ms with the conv and its layout copies
    (``python -m benchmarks.bench_training atto 32 10 eager,fused 2``, alternated, AVX2 host)."""
    (k,) = conv.kernel_size
    b, t, c = h.shape
    weight = conv.weight.permute(0, 2, 1).reshape(conv.out_channels, k * c)  # [C_out, k·C], k-major like h
    return F.linear(h.reshape(b, t // k, k * c), weight, conv.bias)


def backend_for(device_type: str, requested: str | None) -> str:
    """The backend for every block of one forward, resolved once (also honours ``use_backend``).
    Under ``torch.compile`` it is fixed at trace time, which keeps the graph free of context-variable reads."""
    return choose_backend(device_type, requested)


# The mark ``torch.compiler.assume_constant_result`` sets, set by hand: calling the decorator imports
# torch._dynamo (~3 s) at import time, for every user, though only torch.compile reads the mark.
# tests/test_model.py checks that the decorator still sets exactly this attribute.
backend_for._dynamo_marked_constant = True  # type: ignore[attr-defined]


_BLOCK_OPS: dict[str, tuple] = {}


def block_ops(backend: str) -> tuple:
    """``(dwconv_layernorm, bottleneck)`` of a backend, looked up through :func:`convnext_fast.ops.implementation`.
    Kept in a plain dict (filled when a model is built) so ``torch.compile`` reads a constant instead of
    tracing the import machinery behind the lookup."""
    found = _BLOCK_OPS.get(backend)
    if found is None:
        found = _BLOCK_OPS[backend] = tuple(ops.implementation(op, backend) for op in ops.OPS)
    return found


class ConvNeXt1d(reference.ConvNeXt1d):
    """Fused ConvNeXt-1D. Extra keyword ``backend`` ("auto", "cpu", "triton", "reference") forces the
    kernels; the default picks the fastest one live for the input's device."""

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = check_backend_name(backend)
        for name, state in backends().items():
            if state == "live":
                block_ops(name)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            # The custom ops have no ONNX form: export the reference decomposition (same modules, weights).
            return super().forward_features(x)
        reference.check_input(x, self.in_chans)
        backend = backend_for(x.device.type, None if self.backend == "auto" else self.backend)
        return self._features_channels_last(reference.crop_to_stride(x), backend).transpose(1, 2)

    def _features_channels_last(self, x: torch.Tensor, backend: str) -> torch.Tensor:
        dwconv_layernorm, bottleneck = block_ops(backend)
        stem_conv, stem_norm = self.stem
        # channels-last from the stem on (one transpose of the input), so no kernel has to copy its input
        h = patchify(x.transpose(1, 2), stem_conv)  # [B, T/4, C]
        h = F.layer_norm(h, stem_norm.normalized_shape, stem_norm.weight, stem_norm.bias, stem_norm.eps)
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                norm, conv = stage.downsample
                h = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                h = patchify(h, conv)
            for block in stage.blocks:
                n = dwconv_layernorm(
                    h,
                    block.conv_dw.weight,
                    block.conv_dw.bias,
                    block.norm.weight,
                    block.norm.bias,
                    block.norm.eps,
                )
                h = bottleneck(
                    h,
                    n,
                    block.mlp.fc1.weight,
                    block.mlp.fc1.bias,
                    block.mlp.fc2.weight,
                    block.mlp.fc2.bias,
                    block.gamma,
                    drop_path_scale(h, block.drop_path_rate, self.training),
                )
        return h

    def inference_session(self, *, track_weights: bool = True, precision: str = "fp32"):
        """A :class:`convnext_fast.inference.InferenceSession` over this model (one C++ call per forward);
        ``track_weights=False`` snapshots the weights, ``precision="bf16"`` keeps bf16 weights (see the
        session's docs)."""
        from .inference import InferenceSession

        return InferenceSession(self, track_weights=track_weights, precision=precision)


def create(variant: str, **kwargs) -> ConvNeXt1d:
    """Build a fused model by variant name, e.g. ``create("atto", in_chans=20)``."""
    return ConvNeXt1d(**variant_config(variant), **kwargs)


def convert(model: reference.ConvNeXt1d, backend: str = "auto") -> ConvNeXt1d:
    """A fused model with the same configuration, weights, device, dtype and train/eval mode."""
    param = next(model.parameters())
    fused = ConvNeXt1d(**model.config, backend=backend).to(device=param.device, dtype=param.dtype)
    fused.load_state_dict(model.state_dict(), strict=True)
    return fused.train(model.training)
