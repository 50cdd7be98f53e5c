"""Depthwise conv (k=7, padding 3) fused with LayerNorm over channels; see ``convnext_fast.ops``."""
