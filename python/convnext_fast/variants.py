"""Named ConvNeXt-1D sizes: (dims per stage, blocks per stage), as in timm's ConvNeXt family."""

from __future__ import annotations

VARIANTS: dict[str, tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    "atto": ((40, 80, 160, 320), (2, 2, 6, 2)),
    "femto": ((48, 96, 192, 384), (2, 2, 6, 2)),
    "pico": ((64, 128, 256, 512), (2, 2, 6, 2)),
    "nano": ((80, 160, 320, 640), (2, 2, 8, 2)),
    "tiny": ((96, 192, 384, 768), (3, 3, 9, 3)),
    "small": ((96, 192, 384, 768), (3, 3, 27, 3)),
    "base": ((128, 256, 512, 1024), (3, 3, 27, 3)),
}


def variant_config(name: str) -> dict[str, tuple[int, ...]]:
    """Return ``{"dims": ..., "depths": ...}`` for a variant name, with a clear error for unknown names."""
    try:
        dims, depths = VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; choose one of {', '.join(VARIANTS)}") from None
    return {"dims": dims, "depths": depths}
